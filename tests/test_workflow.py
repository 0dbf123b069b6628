"""The Snakemake workflow: lint, formatting, dry-run, and real runs of the stages so far."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SMALL_PETCT, TINY_DWI

from neuroadapt.attribution import ATTRIBUTIONS

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.workflow


def snakemake(
    *args: str, cwd: Path = REPO, check: bool = True, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run the workflow's command line; ``timeout`` (s) only guards against a hang."""
    result = subprocess.run(
        [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def write_config(folder: Path, config: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_lint_is_clean():
    result = snakemake("--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakefmt_is_clean():
    result = subprocess.run(
        [str(BIN / "snakefmt"), "--check", "Snakefile", "workflow"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_config_dry_run_plans_demo_and_ingestion(tmp_path):
    result = snakemake(
        "-n", "--directory", str(tmp_path), "--configfile", str(REPO / "config" / "config.yaml")
    )
    out = result.stdout
    for dataset in ("demo_dwi", "demo_petct", "demo_ct_pretrain"):
        assert f"results/{dataset}/subjects.tsv" in out
    assert "demo_dataset        3" in out and "ingest              3" in out
    for experiment in ("adhd_dti", "ad_multimodal", "hnc_petct", "dti_findings"):
        assert f"results/{experiment}/splits" in out
    assert "splits              4" in out


def test_until_stops_the_plan_after_a_stage(tmp_path):
    """`--until ingest` plans the demo data and ingestion and nothing after them."""
    result = snakemake(
        "-n",
        "--until",
        "ingest",
        "--directory",
        str(tmp_path),
        "--configfile",
        str(REPO / "config" / "config.yaml"),
    )
    counts = job_counts(result.stdout)
    assert counts == {"demo_dataset": 3, "ingest": 3, "total": 6}, result.stdout


def failed_dry_run(folder: Path, config: dict) -> str:
    """The output of a dry run with ``config`` alone, which must fail."""
    result = snakemake(
        "-n",
        "--directory",
        str(folder),
        "--configfile",
        str(write_config(folder, config)),
        "--replace-workflow-config",
        check=False,
    )
    assert result.returncode != 0, result.stdout
    return result.stdout + result.stderr


def test_invalid_config_stops_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["experiments"]["adhd_dti"]["methds"] = config["experiments"]["adhd_dti"].pop("methods")
    output = failed_dry_run(tmp_path, config)
    assert "config key 'experiments.adhd_dti.methds': is not a known key" in output
    assert "did you mean 'methods'" in output
    assert "jobs" not in output.lower() or "Job stats" not in output


def test_a_wrong_weights_checksum_stops_before_any_job(tmp_path):
    weights = tmp_path / "ct_fm.pt"
    weights.write_bytes(b"some other checkpoint")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["experiments"]["adhd_dti"]["backbone"] = {
        "name": "resnet50_w2",
        "weights": str(weights),
        "sha256": "0" * 64,
    }
    output = failed_dry_run(tmp_path, config)
    assert f"{weights}: SHA-256 checksum mismatch" in output
    assert "experiments.adhd_dti.backbone.sha256" in output and "Job stats" not in output


def _experiment(dataset: str) -> dict:
    return {
        "dataset": dataset,
        "inputs": ["fa", "md"],
        "target": "diagnosis",
        "task": "binary",
        "methods": [],  # preprocessing and splits only
        "splits": {"folds": 2, "p_threshold": 0.0},
    }


def test_generates_the_demo_and_ingests_it(tmp_path):
    config = {
        "datasets": {
            "demo_dwi": {"synthetic": TINY_DWI, "label": "diagnosis", "covariates": ["age", "sex"]}
        },
        "experiments": {"adhd_dti": _experiment("demo_dwi")},
    }
    path = write_config(tmp_path, config)
    args = (
        "--cores",
        "2",
        "--directory",
        str(tmp_path),
        "--configfile",
        str(path),
        "--replace-workflow-config",
    )
    snakemake(*args)
    assert (tmp_path / "resources/demo/demo_dwi/participants.tsv").is_file()
    assert (tmp_path / "resources/demo/ground_truth/demo_dwi/effect.json").is_file()
    table = pd.read_csv(tmp_path / "results/demo_dwi/subjects.tsv", sep="\t")
    assert (
        len(table) == 4 and table.dwi[0] == "resources/demo/demo_dwi/sub-001/dwi/sub-001_dwi.nii.gz"
    )
    report = json.loads((tmp_path / "results/demo_dwi/validation.json").read_text())
    assert report["required_modalities"] == ["dwi"]
    assert "rows kept" in (tmp_path / "logs/ingest/demo_dwi.log").read_text()
    fold = pd.read_csv(tmp_path / "results/adhd_dti/splits/fold-2.tsv", sep="\t")
    assert sorted(fold.participant_id) == list(table.participant_id)
    assert (tmp_path / "results/adhd_dti/splits/balance.png").stat().st_size > 10_000

    # Nothing changed: nothing to do. A changed generator parameter regenerates the data.
    assert "Nothing to be done" in snakemake(*args, "-n").stdout
    config["datasets"]["demo_dwi"]["synthetic"] = TINY_DWI | {"effect_size": 0.5}
    write_config(tmp_path, config)
    plan = snakemake(*args, "-n").stdout
    assert "demo_dataset" in plan and "Params have changed" in plan


def test_downloads_named_weights_once_and_only_with_their_checksum(tmp_path):
    """The download_weights rule, from a file:// URL: fetched, then a wrong checksum fails
    with the URL in the message and leaves no file."""
    import hashlib

    published = tmp_path / "published.pt"
    published.write_bytes(b"weights" * 1000)
    sha256 = hashlib.sha256(published.read_bytes()).hexdigest()
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    backbone = {"name": "resnet18_w05", "weights": "resources/weights/ct.pt", "sha256": sha256}
    config["experiments"]["adhd_dti"]["backbone"] = backbone | {"url": published.as_uri()}
    path = write_config(tmp_path, config)
    args = ("--cores", "1", "--directory", str(tmp_path), "--configfile", str(path))
    snakemake(*args, "--replace-workflow-config", "resources/weights/ct.pt")
    assert (tmp_path / "resources/weights/ct.pt").read_bytes() == published.read_bytes()

    (tmp_path / "resources/weights/ct.pt").unlink()
    config["experiments"]["adhd_dti"]["backbone"]["sha256"] = "0" * 64
    write_config(tmp_path, config)
    run = snakemake(*args, "--replace-workflow-config", "resources/weights/ct.pt", check=False)
    assert run.returncode != 0
    assert "SHA-256 checksum mismatch" in (tmp_path / "logs/download/ct.pt.log").read_text()
    assert not (tmp_path / "resources/weights/ct.pt").exists()


def job_counts(plan: str) -> dict[str, int]:
    """The "Job stats" table of a snakemake run or dry run: rule name -> job count."""
    return {
        match[1]: int(match[2]) for match in re.finditer(r"^([a-z_]+)\s+(\d+)$", plan, re.MULTILINE)
    }


TRAINING_CONFIG = {
    "datasets": {
        "demo_dwi": {
            "synthetic": TINY_DWI | {"n_subjects": 12},
            "label": "diagnosis",
            "covariates": ["age", "sex"],
        },
        "demo_ct_pretrain": {
            "synthetic": {"kind": "ct_pretrain", "n_subjects": 4, "ct_shape": [48, 48, 24]},
            "label": "lesion",
        },
        "demo_petct": {
            "synthetic": {"kind": "petct", **SMALL_PETCT, "n_subjects": 12},
            "label": "event",
            "covariates": ["age", "sex"],
        },
    },
    "experiments": {
        "adhd_dti": _experiment("demo_dwi")
        | {
            "methods": ["linear_probe", "lora"],
            "positive_class": "ADHD",
            "backbone": {"name": "resnet10_w025", "pretrained_on": "demo_ct_pretrain"},
            "training": {"tuning": {"enabled": True, "trials": 2}},
        },
        "splits_only": _experiment("demo_dwi"),
        # paper 5 on a UNETR pretrained for GTV segmentation
        "hnc_petct": {
            "dataset": "demo_petct",
            "inputs": ["ct", "pet"],
            "target": "gtv",
            "task": "segmentation+survival",
            "survival": {"time": "survival_months", "event": "event"},
            "splits": {
                "folds": 2,
                "p_threshold": 0.0,
                "survival_time_bins": 1,
                "validation_fraction": 0.5,
            },
            "backbone": {"name": "unetr_tiny", "pretrained_on": "demo_ct_pretrain"},
            "methods": ["ct_only", "pemma"],
            "reference": "ct_only",
        },
        # papers 2 and 4: FA/MD + report text + tables
        "ad_multimodal": _experiment("demo_dwi")
        | {
            "inputs": ["fa", "md", "report_text", "clinical", "genetics"],
            "positive_class": "ADHD",
            "backbone": "vit_tiny",
            "text_encoder": {"kind": "hashing", "dim": 16},
            "methods": ["late_fusion"],
        },
    },
    "petct": {"crop": {"spacing_mm": 4.0, "box_voxels": [32, 32, 32]}},
    "dwi": {
        "denoise": {"method": "none"},
        "bias": {"enabled": False},
        "motion": {"enabled": False},
    },
    "training": {"epochs": 2, "patience": 5},
    "method_settings": {"lora": {"r": 4}},
    "pretrain": {"epochs": 2, "segmentation_epochs": 2},
    "evaluation": {"bootstrap": 100},
    # attributions cheap enough for the test: few path steps, large occlusion cubes
    "interpret": {"steps": 4, "occlusion_window": 8},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The whole chain on tiny data, run once: CT pretraining, a train job per method and
    fold, evaluation, the report. Returns (folder, snakemake arguments, run output)."""
    from neuroadapt.report.html import TEMPLATE

    folder = tmp_path_factory.mktemp("trained")
    shutil.copy(TEMPLATE, folder / "template.html")  # a site's own template
    config = TRAINING_CONFIG | {"report": {"template": str(folder / "template.html")}}
    path = write_config(folder, config)
    args = ("--cores", "2", "--directory", str(folder), "--configfile", str(path))
    args += ("--replace-workflow-config",)
    # the whole chain: about 4 min on 2 quiet cores, more than 10 when they are shared
    return folder, args, snakemake(*args, timeout=1800)


def test_pretrains_trains_and_evaluates_every_method_and_fold(trained):
    folder, _, run = trained
    counts = collections.Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", run.stderr))
    # 2 folds: adhd_dti 2 methods, hnc_petct 2, ad_multimodal late_fusion + 4 phase-1 models
    assert counts["pretrain"] == 2 and counts["train"] == 18 and counts["evaluate"] == 3, counts
    sidecar = json.loads(
        (folder / "results/pretrain/demo_ct_pretrain/resnet10_w025.json").read_text()
    )
    assert sidecar["n_scans"] == 4 and len(sidecar["sha256"]) == 64
    run_json = json.loads((folder / "results/adhd_dti/lora/fold-2/run.json").read_text())
    assert run_json["backbone"]["sha256"] == sidecar["sha256"]
    metrics = pd.read_csv(folder / "results/adhd_dti/metrics.tsv", sep="\t")
    assert sorted(zip(metrics.method, metrics.selection, strict=True)) == [
        ("linear_probe", "best_acc"),
        ("linear_probe", "best_auc"),
        ("lora", "best_acc"),
        ("lora", "best_auc"),
    ]
    assert (metrics.n == 12).all() and metrics.reference.eq("linear_probe").all()
    assert metrics.loc[metrics.method == "lora", "p_value"].notna().all()
    resources = pd.read_csv(folder / "results/adhd_dti/resources.tsv", sep="\t")
    assert resources.set_index("method").folds.to_dict() == {"linear_probe": 2, "lora": 2}
    assert not list(folder.glob("results/adhd_dti/*/.resume/*.pt"))
    assert not (folder / "results/splits_only/metrics.tsv").exists()
    # tuned: 2 trials per method and fold, one chosen each, the chosen rate in run.json
    tuning = pd.read_csv(folder / "results/adhd_dti/tuning.tsv", sep="\t")
    assert len(tuning) == 2 * 2 * 2 and tuning.groupby(["method", "fold"]).chosen.sum().eq(1).all()
    chosen = tuning[tuning.chosen & tuning.method.eq("lora") & tuning.fold.eq(2)].iloc[0]
    # tuning.tsv keeps 6 significant digits
    assert run_json["tuning"]["chosen"]["lr_head"] == pytest.approx(chosen.lr_adapters, rel=1e-5)


def test_ct_pet_and_multimodal_experiments_train_and_evaluate(trained):
    folder, _, _ = trained
    unetr = json.loads((folder / "results/pretrain/demo_ct_pretrain/unetr_tiny.json").read_text())
    assert unetr["task"] == "segmentation" and unetr["img_size"] == [32, 32, 32]
    metrics = pd.read_csv(folder / "results/hnc_petct/metrics.tsv", sep="\t")
    assert set(zip(metrics.method, metrics.selection, strict=True)) == {
        (m, s) for m in ("ct_only", "pemma") for s in ("best_dice", "best_cindex")
    }
    assert metrics.dice.between(0, 1).all() and (metrics.n == 12).all()
    assert metrics.loc[metrics.method == "pemma", "delta_c_index"].notna().all()
    masks = np.load(folder / "results/hnc_petct/pemma/fold-1/segmentations-best_dice.npz")
    assert masks.files and all(masks[k].shape == (32, 32, 32) for k in masks.files)
    multimodal = pd.read_csv(folder / "results/ad_multimodal/metrics.tsv", sep="\t")
    phase1 = {f"unimodal_{m}" for m in ("image", "report_text", "clinical", "genetics")}
    assert set(multimodal.method) == {"late_fusion"} | phase1
    assert multimodal.auc.between(0, 1).all()
    # late fusion's run read the same fold's phase-1 models (their bytes are in its inputs)
    run = json.loads((folder / "results/ad_multimodal/late_fusion/fold-2/run.json").read_text())
    assert run["phase1"] == {m.removeprefix("unimodal_"): "best_auc" for m in phase1}
    missing = pd.read_csv(folder / "results/ad_multimodal/missing_modality.tsv", sep="\t")
    assert set(missing.method) == {"late_fusion"}  # no robustness rows for phase 1
    assert set(missing.modality) == {"image", "report_text", "clinical", "genetics"}
    assert sorted(missing.fraction.unique()) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert missing.auc.between(0, 1).all() and (missing.n == multimodal.n.iloc[0]).all()
    assert pd.read_csv(folder / "results/adhd_dti/missing_modality.tsv", sep="\t").empty
    html = (folder / "results/report/index.html").read_text()
    assert "Kaplan" in html and "hnc_petct" in html and "ad_multimodal" in html
    assert "Missing-modality robustness" in html


def test_interprets_every_image_run_and_scores_it_against_the_planted_region(trained):
    """An interpret job per experiment x image-reading method x fold, its per-subject maps
    in the subject's DWI space, and per experiment the localisation table and group maps."""
    folder, _, run = trained
    counts = collections.Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", run.stderr))
    # adhd_dti 2 methods, hnc_petct 2, ad_multimodal late_fusion and unimodal_image; 2 folds
    assert counts["interpret"] == 12 and counts["attribution"] == 3, counts
    assert not (folder / "results/ad_multimodal/attribution/unimodal_clinical").exists()
    table = pd.read_csv(folder / "results/adhd_dti/attribution.tsv", sep="\t")
    pooled = table[table.fold == "pooled"]
    assert set(zip(pooled.method, pooled.attribution, strict=True)) == {
        (m, a) for m in ("linear_probe", "lora") for a in ATTRIBUTIONS
    }
    # only the patients who carry the planted effect are scored: the same ones for every row
    truth = pd.read_csv(
        folder / "resources/demo/ground_truth/demo_dwi/sessions_truth.tsv", sep="\t"
    )
    assert (pooled.n == truth.carries_effect.sum()).all()
    assert pooled.region_share.between(0.001, 0.2).all() and pooled.enrichment.ge(0).all()
    assert (
        pooled.score.eq("auc").all()
        and pooled.layer[pooled.attribution == "grad_cam"].eq("layer2").all()
    )  # the deepest ResNet stage with a 4^3 map on 32^3 inputs
    native = sorted((folder / "results/adhd_dti/attribution/lora/fold-1").glob("*.nii.gz"))
    assert native and all("_space-dwi_target-diagnosis_desc-" in p.name for p in native)
    fa = nib.load(
        next(
            folder.glob("results/demo_dwi/derivatives/neuroadapt/sub-*/dwi/*param-fa_dwimap.nii.gz")
        )
    )
    assert nib.load(native[0]).shape == fa.shape
    segsurv = pd.read_csv(folder / "results/hnc_petct/attribution.tsv", sep="\t")
    scored = segsurv[segsurv.fold == "pooled"]
    assert scored.target.eq("risk").all() and scored.score.eq("c_index").all()
    assert (scored.n == 12).all()  # every subject has a GTV
    assert "grad_cam" not in set(scored.attribution)  # a UNETR has no ResNet stage
    with np.load(folder / "results/adhd_dti/attribution_maps.npz") as maps:
        group = maps["lora/diagnosis/integrated_gradients/1"]
        assert group.shape == (32, 32, 32) and group.sum() == pytest.approx(1.0, rel=1e-4)
        assert maps["region/diagnosis"].max() <= 1.0
    html = (folder / "results/report/index.html").read_text()
    assert "Where the models look" in html and "group attribution maps of adhd_dti" in html


def test_interpretation_can_be_turned_off(trained, tmp_path):
    folder, args, _ = trained
    config = yaml.safe_load(Path(args[args.index("--configfile") + 1]).read_text())
    config["interpret"] = {"enabled": False}
    changed = write_config(tmp_path, config)
    args = tuple(str(changed) if a.endswith("config.yaml") else a for a in args)
    plan = snakemake(*args, "-n", "--forceall").stdout
    assert "interpret" not in job_counts(plan) and "attribution" not in job_counts(plan), plan


def test_a_changed_method_setting_reruns_only_that_methods_jobs(trained, tmp_path):
    folder, args, _ = trained
    config = yaml.safe_load(Path(args[args.index("--configfile") + 1]).read_text())
    config["method_settings"]["lora"]["r"] = 2
    changed = write_config(tmp_path, config)
    args = tuple(str(changed) if a.endswith("config.yaml") else a for a in args)
    plan = snakemake(*args, "-n").stdout
    assert job_counts(plan) == {
        "train": 2,
        "interpret": 2,
        "evaluate": 1,
        "attribution": 1,
        "report": 1,
        "all": 1,
        "total": 8,
    }, plan
    outputs = re.findall(r"output: (\S+)", plan)
    assert sorted(o for o in outputs if "fold-" in o) == [
        "results/adhd_dti/attribution/lora/fold-1",
        "results/adhd_dti/attribution/lora/fold-2",
        "results/adhd_dti/lora/fold-1",
        "results/adhd_dti/lora/fold-2",
    ]


def test_a_changed_report_template_reruns_only_the_report(trained):
    folder, args, _ = trained
    template = folder / "template.html"
    template.write_text(template.read_text().replace("neuroadapt report</h1>", "Our lab</h1>"))
    plan = snakemake(*args, "-n").stdout
    assert job_counts(plan) == {"report": 1, "all": 1, "total": 2}, plan


def test_a_train_job_asking_for_two_gpus_runs_two_processes_and_matches_one(trained, tmp_path):
    """The rule's gpu resource sets the processes (DDP; gloo on this CPU machine); LoRA's
    results equal the one-process job's."""
    folder, args, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, symlinks=True)
    run = "results/adhd_dti/lora/fold-1"
    args = tuple(str(copy) if a == str(folder) else a for a in args)
    snakemake(*args, "--set-resources", "train:gpu=2", "--force", run)
    assert json.loads((copy / run / "run.json").read_text())["processes"] == 2
    log = (copy / "logs/train/adhd_dti/lora/fold-1.log").read_text()
    assert "process 0 of 2 on cpu (gloo)" in log
    one = pd.read_csv(folder / run / "predictions.tsv", sep="\t")
    two = pd.read_csv(copy / run / "predictions.tsv", sep="\t")
    assert two.participant_id.tolist() == one.participant_id.tolist()
    np.testing.assert_allclose(two.probability, one.probability, atol=1e-6)


REPORT_SECTIONS = ("summary", "cohort", "qc", "methods", "results", "provenance", "missing")


def test_the_report_opens_in_a_real_browser_complete_and_without_errors(trained):
    folder, _, _ = trained
    report = folder / "results/report/index.html"
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("NEUROADAPT_REQUIRE_BROWSER"):
            pytest.fail("chromium is not on PATH (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    html = report.read_text()
    assert "<script" not in html and 'src="http' not in html  # self-contained
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
        page.goto(report.as_uri())
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
        )
        sections = page.evaluate("Array.from(document.querySelectorAll('[id]')).map(e => e.id)")
        links = page.evaluate(
            "Array.from(document.querySelectorAll('td a')).map(a => a.getAttribute('href'))"
        )
        page.screenshot(path=str(folder / "report.png"), full_page=True)
        browser.close()
    assert problems == []
    assert images and all(ok for _, ok in images), [alt for alt, ok in images if not ok]
    assert set(REPORT_SECTIONS) <= set(sections), sections
    alts = " ".join(alt for alt, _ in images)
    assert "ROC curves of adhd_dti" in alts and "FA and MD of sub-001" in alts
    assert links and all((report.parent / link).is_file() for link in links)  # QC figures
    assert (folder / "report.png").stat().st_size > 50_000
    assert "splits_only: no methods configured" in html


def test_ingests_a_users_bids_dataset_and_fails_clearly_on_a_bad_one(tiny_dwi, tmp_path):
    bids = tmp_path / "my_bids"
    shutil.copytree(tiny_dwi, bids)
    config = {
        "datasets": {
            "study": {
                "bids_dir": str(bids),
                "label": "diagnosis",
                "covariates": ["age", "site"],
                "exclude": ["sub-004"],
            }
        },
        "experiments": {"dti": _experiment("study")},
    }
    path = write_config(tmp_path, config)
    args = (
        "--cores",
        "1",
        "--directory",
        str(tmp_path),
        "--configfile",
        str(path),
        "--replace-workflow-config",
        "results/study/subjects.tsv",  # ingestion only: one class is too small to split
    )
    snakemake(*args)
    table = pd.read_csv(tmp_path / "results/study/subjects.tsv", sep="\t")
    assert list(table.participant_id) == ["sub-001", "sub-002", "sub-003"]
    assert not (tmp_path / "resources").exists()  # no demo generated for a real dataset

    # Break one file: the run fails, names the file, and leaves no stale table behind.
    (bids / "sub-002/dwi/sub-002_dwi.bvec").unlink()
    result = snakemake(*args, "--forcerun", "ingest", check=False)
    assert result.returncode != 0
    assert "sub-002_dwi.nii.gz: has no .bvec file" in result.stdout + result.stderr
    assert not (tmp_path / "results/study/subjects.tsv").exists()
    assert "has no .bvec file" in (tmp_path / "logs/ingest/study.log").read_text()


def test_slurm_profile_is_found_from_the_repository_root_and_plans_the_demo(tmp_path):
    """`snakemake --profile slurm` finds ./slurm (a link to profiles/slurm); its keys are
    valid for the SLURM executor plugin (dry-run; conda left out: no channel is reachable
    here, so CI runs the same profile without it)."""
    assert (REPO / "slurm").resolve() == (REPO / "profiles" / "slurm").resolve()
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["software-deployment-method"] == "conda"
    assert profile["retries"] >= 1 and profile["slurm-logdir"] == "logs/slurm"
    # every per-subject rule grouped, each under a name of its own (never mixed in one job)
    groups = profile["groups"]
    assert set(groups) == {"petct", "dwi"} and len(set(groups.values())) == len(groups)
    assert all(profile["group-components"][name] > 1 for name in groups.values())
    without_conda = tmp_path / "profile"
    without_conda.mkdir()
    profile.pop("software-deployment-method")
    (without_conda / "config.yaml").write_text(yaml.safe_dump(profile))
    result = snakemake(
        "--profile",
        str(without_conda),
        "-n",
        "--directory",
        str(tmp_path),
        "--configfile",
        str(REPO / "config" / "config.yaml"),
    )
    assert "demo_dataset" in result.stdout and "splits" in result.stdout
