"""The report's results of a segmentation+survival experiment (paper 5), on small synthetic
outputs written in exactly the formats training and evaluation write."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from neuroadapt.report import segsurv
from neuroadapt.report.html import build_report
from neuroadapt.subjects import row_folder, row_prefix

METHODS = ["pemma", "early_fusion", "ct_only"]
SELECTIONS = ["best_cindex", "best_dice"]
FOLDS = 3
PER_FOLD = 8
SHAPE = (16, 16, 8)

# lifelines 0.30.3 ``logrank_test`` on the best_cindex groups of :func:`outcomes` (split at
# each fold's median risk). lifelines pins pandas < 3, so it cannot share this environment;
# these were computed once in a separate virtual environment from this file's own function.
LIFELINES_P = {
    "pemma": 9.40306364385014e-05,
    "early_fusion": 0.09125816599718287,
    "ct_only": 0.7018210282125799,
}


def outcomes() -> pd.DataFrame:
    """Out-of-fold predictions: 3 methods x 3 folds x 8 subjects x 2 selections. Each fold
    adds its own offset to the risks (as a Cox model's risk is defined up to a constant), so
    a pooled median would put whole folds into one group."""
    rows = []
    strength = {"pemma": 1.0, "early_fusion": 0.15, "ct_only": 0.0}
    for method in METHODS:
        for selection in SELECTIONS:
            for i in range(FOLDS * PER_FOLD):
                fold = i // PER_FOLD + 1
                time = 3.0 + (i * 7) % 31 + 0.5 * (i % 4)
                noise = ((i * 13 + len(method)) % 7) / 7
                rows.append(
                    {
                        "method": method,
                        "fold": fold,
                        "participant_id": f"sub-{i + 1:03d}",
                        "session_id": None,
                        "selection": selection,
                        "event": int(i % 3 != 0),
                        "time": time,
                        "risk": 10.0 * fold - strength[method] * time / 5 + noise,
                    }
                )
    return pd.DataFrame(rows)


def _blob(centre: tuple[int, int, int], radius: float) -> np.ndarray:
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0)
    return (np.linalg.norm(grid - np.array(centre), axis=-1) <= radius).astype(np.uint8)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def write_experiment(root, sessions: bool = False) -> tuple[dict, dict]:
    """Every file the report reads, under ``root`` (as the workflow's ``results/``). Returns
    (config, layout)."""
    results = root / "results"
    experiment, dataset = "hecktor_pemma", "hecktor"
    out = results / experiment
    predictions = outcomes()
    if sessions:
        predictions["session_id"] = "ses-01"
    derivatives = results / dataset / "derivatives" / "neuroadapt"
    shift = {"pemma": 0, "early_fusion": 1, "ct_only": 3}
    masks: dict[tuple[str, int, str], dict[str, np.ndarray]] = {}
    dice, hd95 = [], []
    for _, row in predictions.iterrows():
        number = int(row.participant_id[4:])
        prefix = row_prefix(row.participant_id, row.session_id)
        truth = _blob((8, 8, 2 + number % 4), 2.5 + number % 3)
        tensors = derivatives / row_folder(row.participant_id, row.session_id) / "tensors"
        tensor = tensors / f"{prefix}_space-box_desc-ctpet_tensor.npy"
        if not tensor.exists():
            tensors.mkdir(parents=True, exist_ok=True)
            ct = np.linspace(0, 1, np.prod(SHAPE)).reshape(SHAPE)
            np.save(tensor, np.stack([ct, 0.2 + 0.7 * truth]).astype(np.float16))
            np.save(tensors / f"{prefix}_space-box_label-GTV_mask.npy", truth)
            tensor.with_suffix(".json").write_text(json.dumps({"SpacingMM": 2.0}))
        # a worse method is shifted further, more so for higher-numbered subjects
        offset = shift[row.method] + number % 3
        predicted = np.roll(truth, offset, axis=0)
        masks.setdefault((row.method, row.fold, row.selection), {})[prefix] = predicted
        dice.append(_dice(truth.astype(bool), predicted.astype(bool)))
        hd95.append(2.0 * offset)
    predictions["dice"], predictions["hd95_mm"] = dice, hd95
    for (method, fold, selection), arrays in masks.items():
        folder = out / method / f"fold-{fold}"
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / f"segmentations-{selection}.npz", **arrays)
    predictions.to_csv(out / "predictions.tsv", sep="\t", index=False)

    folds = predictions.groupby(["method", "selection", "fold"], as_index=False).agg(
        n=("risk", "size"), dice=("dice", "mean"), hd95_mm=("hd95_mm", "mean")
    )
    folds["c_index"] = 0.5 + 0.1 * folds.fold / FOLDS
    folds[["method", "selection", "fold", "n", "c_index", "dice", "hd95_mm"]].to_csv(
        out / "folds.tsv", sep="\t", index=False
    )
    metrics = []
    for method in METHODS:
        for selection in SELECTIONS:
            part = predictions[
                (predictions.method == method) & (predictions.selection == selection)
            ]
            row = {"method": method, "selection": selection, "n": len(part)}
            values = {"c_index": 0.70 - 0.05 * METHODS.index(method), "dice": part.dice.mean()}
            values["hd95_mm"] = part.hd95_mm.mean()
            for metric, value in values.items():
                row |= {
                    metric: value,
                    f"{metric}_low": value * 0.9,
                    f"{metric}_high": value * 1.1,
                    f"{metric}_fold_mean": value,
                    f"{metric}_fold_sd": 0.01,
                }
            row["reference"] = "ct_only"
            reference = method == "ct_only"
            delta = values["c_index"] - 0.60
            row |= {
                "delta_c_index": np.nan if reference else delta,
                "delta_c_index_low": np.nan if reference else delta - 0.05,
                "delta_c_index_high": np.nan if reference else delta + 0.05,
                "p_value": np.nan if reference else 0.01 + 0.2 * METHODS.index(method),
            }
            metrics.append(row)
    pd.DataFrame(metrics).to_csv(out / "metrics.tsv", sep="\t", index=False)
    pd.DataFrame(
        {
            "method": METHODS,
            "total_parameters": [1_000_000, 1_000_000, 900_000],
            "trainable_parameters": [20_000, 1_000_000, 900_000],
            "trainable_percent": [2.0, 100.0, 100.0],
            "peak_memory_mib": [500.0, 800.0, 700.0],
            "memory_kind": "cpu_rss",
            "seconds_per_epoch": [1.5, 2.0, 1.8],
            "epochs_run": [10.0, 12.0, 11.0],
            "device": "cpu",
            "folds": FOLDS,
        }
    ).to_csv(out / "resources.tsv", sep="\t", index=False)

    subjects = predictions.drop_duplicates("participant_id")[
        ["participant_id", "session_id", "event", "time"]
    ].rename(columns={"time": "survival_months"})
    subjects["gtv"] = "bids/" + subjects.participant_id + "_mask.nii.gz"  # as ingestion writes
    (results / dataset).mkdir(parents=True, exist_ok=True)
    subjects.to_csv(results / dataset / "subjects.tsv", sep="\t", index=False, na_rep="n/a")
    splits = out / "splits"
    splits.mkdir()
    for fold in range(1, FOLDS + 1):
        test = predictions[(predictions.method == "pemma") & (predictions.selection == "best_dice")]
        roles = np.where(test.fold == fold, "test", "train")
        pd.DataFrame({"participant_id": test.participant_id, "role": roles}).to_csv(
            splits / f"fold-{fold}.tsv", sep="\t", index=False
        )
    (splits / "balance.png").write_bytes(_png())
    run = out / "pemma" / "fold-1" / "run.json"
    run.write_text(
        json.dumps(
            {
                "method": "pemma",
                "fold": 1,
                "method_description": "prompt tokens and ``LoRA``",
                "device": "cpu",
                "versions": {"torch": "2.13"},
                "code": {"commit": "abc123", "dirty": False},
            }
        )
    )
    config = {
        "datasets": {dataset: {}},
        "experiments": {
            experiment: {
                "dataset": dataset,
                "inputs": ["ct", "pet"],
                "target": "gtv",
                "task": "segmentation+survival",
                "survival": {"time": "survival_months", "event": "event"},
                "methods": METHODS,
                "backbone": "swin_unetr",
                "splits": {"folds": FOLDS},
            }
        },
    }
    layout = {
        "datasets": {dataset: {"subjects": str(results / dataset / "subjects.tsv")}},
        "experiments": {
            experiment: {
                "splits": str(splits),
                **{key: str(out / f"{key}.tsv") for key in ("metrics", "folds", "predictions")},
                "resources": str(out / "resources.tsv"),
                "runs": [str(run)],
            }
        },
    }
    return config, layout


def _png() -> bytes:
    from neuroadapt.report.style import plt

    figure, ax = plt.subplots(figsize=(1, 1))
    from neuroadapt.report.figures import png

    return png(figure)


def _section(config: dict, layout: dict) -> dict:
    name = next(iter(config["experiments"]))
    runs = [json.loads(open(p).read()) for p in layout["experiments"][name]["runs"]]
    return segsurv.segsurv_section(
        name, config["experiments"][name], layout["experiments"][name], runs
    )


def _images(html: str) -> dict[str, bytes]:
    """Every inline image of the page by its alt text, decoded."""
    found = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', html)
    return {alt: base64.b64decode(data) for data, alt in found}


@pytest.fixture
def experiment(tmp_path):
    return write_experiment(tmp_path)


def test_an_experiment_is_segmentation_survival_by_its_task():
    assert segsurv.is_segmentation_survival({"task": "segmentation+survival"})
    assert segsurv.is_segmentation_survival({"task": "survival"})
    assert not segsurv.is_segmentation_survival({"task": "binary"})
    assert not segsurv.is_segmentation_survival({})


def test_the_risk_split_is_at_each_folds_median():
    predictions = outcomes()
    predictions["group"] = segsurv.risk_groups(predictions)
    counts = predictions.groupby(["method", "selection", "fold"]).group.value_counts()
    # every fold of every method: half above its own median, half at or below
    assert (counts.unstack()[["high", "low"]] == PER_FOLD // 2).all().all()
    for _, part in predictions.groupby(["method", "selection", "fold"]):
        assert (part.risk[part.group == "high"] > part.risk.median()).all()
        assert (part.risk[part.group == "low"] <= part.risk.median()).all()
    # a pooled median would not do: the fold offsets put whole folds into one group
    pooled = predictions.risk > predictions.groupby(["method", "selection"]).risk.transform(
        "median"
    )
    assert pooled[predictions.fold == FOLDS].all() and not pooled[predictions.fold == 1].any()


def test_the_log_rank_p_is_lifelines_on_the_same_groups(experiment):
    section = _section(*experiment)
    reported = {row["method"]: row for row in section["km"]["table"]}
    predictions = outcomes()
    predictions = predictions[predictions.selection == "best_cindex"].copy()
    predictions["group"] = segsurv.risk_groups(predictions)
    for method in METHODS:
        part = predictions[predictions.method == method]
        p = segsurv.logrank_p(part.time, part.event, part.group)
        assert p == pytest.approx(LIFELINES_P[method], rel=1e-9, abs=1e-12)
        assert reported[method]["p"] == f"{p:.3g}"
        assert reported[method]["n_high"] == reported[method]["n_low"] == FOLDS * PER_FOLD // 2
        assert reported[method]["events_high"] == int(part.event[part.group == "high"].sum())
    # the risks of pemma follow the times, so its groups differ; ct_only's risks are noise
    assert LIFELINES_P["pemma"] < 0.05 < LIFELINES_P["ct_only"]


def test_no_log_rank_p_without_two_groups_or_an_event():
    assert segsurv.logrank_p(np.array([1.0, 2.0]), np.array([1, 1]), np.array(["low"] * 2)) is None
    assert (
        segsurv.logrank_p(np.array([1.0, 2.0]), np.array([0, 0]), np.array(["low", "high"])) is None
    )


def test_the_examples_are_the_best_median_and_worst_dice_of_the_first_method():
    predictions = outcomes()
    predictions["dice"] = np.linspace(0.1, 0.9, len(predictions))
    picks = segsurv.example_subjects(predictions, "pemma")
    rows = predictions[(predictions.method == "pemma") & (predictions.selection == "best_dice")]
    assert [label for label, _ in picks] == ["best", "median", "worst"]
    assert picks[0][1].dice == rows.dice.max() and picks[-1][1].dice == rows.dice.min()
    assert rows.dice.min() < picks[1][1].dice < rows.dice.max()


def test_the_report_shows_metrics_kaplan_meier_and_example_segmentations(experiment, tmp_path):
    config, layout = experiment
    build_report(config, layout, tmp_path / "results/report/index.html")
    html = (tmp_path / "results/report/index.html").read_text()
    for heading in ("C-index", "Dice", "HD95 (mm)", "ΔC-index vs ct_only", "log-rank p"):
        assert f"<th>{heading}</th>" in html, heading
    assert "0.700 [0.63, 0.77]" in html  # pemma's C-index with its interval
    assert "+0.100 [+0.05, +0.15]" in html and "<td>reference</td>" in html
    assert "above the median of the test subjects of the same fold" in html
    images = _images(html)
    for alt in (
        "Kaplan-Meier curves by predicted risk of hecktor_pemma",
        "example segmentations of hecktor_pemma",
        "per-fold C-index of hecktor_pemma",
        "per-fold HD95 (mm) of hecktor_pemma",
        "trainable parameters against C-index and Dice of hecktor_pemma",
    ):
        assert images[alt].startswith(b"\x89PNG"), alt
    assert "ROC curves" not in html and 'id="missing"' not in html
    assert "segment the gross tumour volume" in html  # the methods paragraph
    # the fold balance counts events, not the target's mask paths
    assert "<td>0: 3, 1: 5</td>" in html and "_mask.nii.gz" not in html


def test_subjects_with_sessions_are_found_by_their_row_prefix(tmp_path):
    config, layout = write_experiment(tmp_path, sessions=True)
    section = _section(config, layout)
    assert section["notes"] == [] and section["examples"]
    assert all(row["subject"].endswith("_ses-01") for row in section["examples"]["table"])


def test_a_missing_segmentation_file_is_reported_not_fatal(experiment, tmp_path):
    config, layout = experiment
    section = _section(config, layout)
    subject = section["examples"]["table"][0]["subject"]
    predictions = pd.read_csv(layout["experiments"]["hecktor_pemma"]["predictions"], sep="\t")
    fold = predictions.fold[
        (predictions.participant_id == subject) & (predictions.method == "early_fusion")
    ].iloc[0]
    missing = (
        tmp_path / f"results/hecktor_pemma/early_fusion/fold-{fold}/segmentations-best_dice.npz"
    )
    missing.unlink()
    build_report(config, layout, tmp_path / "results/report/index.html")
    html = (tmp_path / "results/report/index.html").read_text()
    note = f"early_fusion: segmentations of fold {fold} (best_dice) missing: {missing}"
    assert note in html and 'id="missing"' in html
    assert "example segmentations of hecktor_pemma" in _images(html)  # the rest still shown


def test_a_missing_model_ready_input_skips_that_example(experiment):
    config, layout = experiment
    section = _section(config, layout)
    subject = section["examples"]["table"][-1]["subject"]
    results = os.path.dirname(os.path.dirname(layout["experiments"]["hecktor_pemma"]["metrics"]))
    tensor = f"{results}/hecktor/derivatives/neuroadapt/{subject}/tensors/{subject}_space-box_desc-ctpet_tensor.npy"
    os.remove(tensor)
    section = _section(config, layout)
    assert f"example {subject}: model-ready input missing: {tensor}" in section["notes"]
    assert len(section["examples"]["table"]) == 2


def test_a_method_without_results_is_listed(experiment):
    config, layout = experiment
    config["experiments"]["hecktor_pemma"]["methods"] = [*METHODS, "late_fusion"]
    section = _section(config, layout)
    assert "late_fusion: not in metrics.tsv (not trained or evaluated)" in section["notes"]
    assert [row["method"] for row in section["km"]["table"]] == METHODS


def test_the_report_opens_in_a_real_browser(experiment, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("NEUROADAPT_REQUIRE_BROWSER"):  # CI installs it
            pytest.fail("chromium is not on PATH (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    config, layout = experiment
    report = tmp_path / "results/report/index.html"
    build_report(config, layout, report)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
        page.goto(report.as_uri())
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
        )
        browser.close()
    assert problems == []
    assert len(images) >= 6 and all(ok for _, ok in images), images
