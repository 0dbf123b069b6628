"""Multi-label training and evaluation (paper 3): targets, task metrics, evaluation, a short
fit, the config, the report section and the demo's planted findings."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from sklearn.metrics import roc_auc_score

from neuroadapt.cohort import Cohort, load_cohort
from neuroadapt.config import validate_config
from neuroadapt.errors import ConfigError, InputError
from neuroadapt.evaluate import evaluate_experiment
from neuroadapt.metrics import macro_auc, multilabel_metrics
from neuroadapt.tasks import MultilabelTask, task_for
from neuroadapt.train import run_training

LABELS = ["finding_a", "finding_b"]
EXPERIMENT = {"dataset": "toy", "inputs": ["fa", "md"], "target": LABELS, "task": "multilabel"}


# ----------------------------------------------------------------------------- targets


def write_cohort(root: Path, findings: dict[str, list], roles: list[str], size: int = 8) -> dict:
    """subjects.tsv (finding columns as given), fold-1.tsv, validation.json naming the BIDS
    root, and (2, size^3) tensors; finding_a brightens an FA block, finding_b an MD block."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = len(roles)
    rows, tensors = [], []
    for i in range(n):
        participant = f"sub-{i + 1:02d}"
        image = rng.normal(0.3, 0.05, (2, size, size, size))
        half = size // 2
        if str(findings.get("finding_a", ["0"] * n)[i]) == "1":
            image[0, :half, :half, :half] += 0.5
        if str(findings.get("finding_b", ["0"] * n)[i]) == "1":
            image[1, half:, half:, half:] += 0.5
        path = root / f"{participant}_space-box_desc-famd_tensor.npy"
        np.save(path, image.astype(np.float16))
        tensors.append(str(path))
        rows.append({"participant_id": participant, "session_id": "n/a"})
    table = pd.DataFrame(rows).assign(**findings)
    table.to_csv(root / "subjects.tsv", sep="\t", index=False)
    pd.DataFrame({"participant_id": table.participant_id, "role": roles}).to_csv(
        root / "fold-1.tsv", sep="\t", index=False
    )
    (root / "validation.json").write_text(json.dumps({"bids_dir": "/data/study"}))
    return {
        "subjects_table": str(root / "subjects.tsv"),
        "fold_table": str(root / "fold-1.tsv"),
        "tensors": tensors,
    }


# 16 subjects: the four combinations of two findings in every role.
ROLES = ["train"] * 8 + ["validation"] * 4 + ["test"] * 4
FINDINGS = {"finding_a": ["0", "1", "0", "1"] * 4, "finding_b": ["0", "0", "1", "1"] * 4}


def load(cohort: dict, experiment=EXPERIMENT) -> Cohort:
    return load_cohort(
        cohort["subjects_table"], cohort["fold_table"], cohort["tensors"], experiment, "exp"
    )


def test_a_list_target_loads_as_a_matrix_of_labels(tmp_path):
    cohort = load(write_cohort(tmp_path, FINDINGS, ROLES))
    assert cohort.labels.shape == (16, 2) and cohort.labels.dtype == torch.float32
    assert cohort.label_names == ("finding_a", "finding_b")
    assert cohort.labels[:4].tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]


@pytest.mark.parametrize(
    ("findings", "message"),
    [
        (
            {"finding_a": FINDINGS["finding_a"]},
            r"/data/study/participants.tsv: has no column 'finding_b' \(a label of the "
            r"multilabel target exp.target.*Fix: add a 0/1 column 'finding_b' to "
            r"participants.tsv and rerun ingestion",
        ),
        (
            {**FINDINGS, "finding_b": ["2"] + FINDINGS["finding_b"][1:]},
            r"/data/study/participants.tsv: column 'finding_b' \(a label of exp.target\) holds "
            r"values other than 0/1: '2' \(sub-01\). Fix: write 1 where the finding is present",
        ),
        (
            {
                **FINDINGS,
                "finding_a": FINDINGS["finding_a"][:3] + ["n/a"] + FINDINGS["finding_a"][4:],
            },
            r"column 'finding_a' \(a label of exp.target\) holds values other than 0/1: "
            r"n/a \(sub-04\)",
        ),
    ],
)
def test_a_missing_or_non_binary_label_column_names_participants_tsv(tmp_path, findings, message):
    with pytest.raises(InputError, match=message):
        load(write_cohort(tmp_path, findings, ROLES))


def test_a_label_constant_in_the_training_part_names_the_label_and_the_fold(tmp_path):
    constant = {**FINDINGS, "finding_b": ["1"] * 8 + FINDINGS["finding_b"][8:]}
    with pytest.raises(
        InputError,
        match=r"fold-1.tsv: label 'finding_b' is 1 for every subject of the training part",
    ):
        load(write_cohort(tmp_path, constant, ROLES))


# ----------------------------------------------------------------------------- task


class Logits(torch.nn.Module):
    """Returns the logits stored in the images ``(N, 1, 1, 1, L)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, 0, :]


def fixed_cohort(labels: np.ndarray, probabilities: np.ndarray) -> Cohort:
    logits = np.log(probabilities / (1 - probabilities))
    return Cohort(
        images=torch.tensor(logits, dtype=torch.float32)[:, None, None, None, :],
        labels=torch.tensor(labels, dtype=torch.float32),
        roles=np.array(["validation"] * len(labels)),
        ids=pd.DataFrame(
            {"participant_id": [f"sub-{i}" for i in range(len(labels))], "session_id": "n/a"}
        ),
        label_names=("a", "b"),
    )


Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
P = np.array([[0.9, 0.4], [0.2, 0.8], [0.6, 0.3], [0.7, 0.1]])


def test_the_task_validates_with_bce_mean_label_accuracy_and_macro_auc():
    task = task_for("multilabel", ["fa", "md"])
    assert isinstance(task, MultilabelTask)
    assert task.selections == {"best_acc": "val_accuracy", "best_auc": "val_auc"}
    cohort = fixed_cohort(Y, P)
    row = task.validate(None, Logits(), cohort, np.arange(4), torch.device("cpu"), 2, False)
    bce = -np.mean(Y * np.log(P) + (1 - Y) * np.log(1 - P))
    assert row["val_loss"] == pytest.approx(bce, rel=1e-5)
    # at 0.5: a -> 1,0,1,1 (3 of 4 right); b -> 0,1,0,0 (3 of 4 right); rows right: 1 and 3
    assert row["val_accuracy"] == pytest.approx(6 / 8)
    assert row["val_subset_accuracy"] == pytest.approx(2 / 4)
    # AUC a: positives 0.9, 0.6 against negatives 0.2, 0.7: 3 of 4 pairs; b: 0.8, 0.3 vs 0.4,
    # 0.1: 3 of 4 pairs
    assert row["val_auc"] == pytest.approx((0.75 + 0.75) / 2, rel=1e-5)


def test_validation_auc_uses_the_labels_with_both_classes():
    one_class = Y.copy()
    one_class[:, 1] = 1
    row = task_for("multilabel").validate(
        None, Logits(), fixed_cohort(one_class, P), np.arange(4), torch.device("cpu"), 4, False
    )
    assert row["val_auc"] == pytest.approx(0.75, rel=1e-5)
    assert np.isnan(macro_auc(one_class, P)[0])  # the pooled metric stays undefined


def test_predictions_have_a_label_and_a_probability_column_per_label():
    columns, artefacts = task_for("multilabel").predict(
        None, Logits(), fixed_cohort(Y, P), np.arange(4), torch.device("cpu"), 4, False
    )
    assert list(columns) == ["label_a", "label_b", "prob_a", "prob_b"] and artefacts == {}
    assert columns["label_b"].tolist() == [0, 1, 1, 0]
    np.testing.assert_allclose(columns["prob_a"], P[:, 0], rtol=1e-5)


def test_multilabel_metrics_by_hand():
    values = multilabel_metrics(Y, P, ["a", "b"])
    assert values["macro_auc"] == pytest.approx(0.75)
    assert values["auc_a"] == pytest.approx(0.75) and values["auc_b"] == pytest.approx(0.75)
    assert values["subset_accuracy"] == pytest.approx(0.5)
    assert values["mean_accuracy"] == pytest.approx(0.75)
    # a: tp 2, fn 0, tn 1, fp 1 -> (1 + 0.5) / 2; b: tp 1, fn 1, tn 2, fp 0 -> (0.5 + 1) / 2
    assert values["mean_balanced_accuracy"] == pytest.approx(0.75)
    # F1 a: 2 tp, 1 fp -> 0.8; b: 1 tp, 1 fn -> 2/3
    assert values["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_multilabel_metrics_equal_scikit_learns_with_ties_and_one_class_labels():
    from sklearn import metrics as skm

    rng = np.random.default_rng(3)
    for _ in range(50):
        n, n_labels = int(rng.integers(4, 30)), int(rng.integers(2, 5))
        labels = rng.integers(0, 2, (n, n_labels))
        scores = np.round(rng.uniform(0, 1, (n, n_labels)), 1)  # many ties
        values = multilabel_metrics(labels, scores, [str(k) for k in range(n_labels)])
        predicted = scores >= 0.5
        both = [len(set(labels[:, k])) == 2 for k in range(n_labels)]
        for k in range(n_labels):
            expected = roc_auc_score(labels[:, k], scores[:, k]) if both[k] else np.nan
            np.testing.assert_allclose(values[f"auc_{k}"], expected)
        if all(both):
            expected = roc_auc_score(labels, scores, average="macro")
            assert values["macro_auc"] == pytest.approx(expected)
        else:
            assert np.isnan(values["macro_auc"])
        f1 = skm.f1_score(labels, predicted, average="macro", zero_division=0.0)
        assert values["macro_f1"] == pytest.approx(f1)
        assert values["subset_accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
        assert values["mean_accuracy"] == pytest.approx(1 - skm.hamming_loss(labels, predicted))


# ----------------------------------------------------------------------------- evaluation


def write_run(root: Path, method: str, fold: int, labels: np.ndarray, scores: np.ndarray) -> Path:
    """A run folder like the train rule's for 10 test subjects per fold."""
    folder = root / method / f"fold-{fold}"
    folder.mkdir(parents=True)
    index = np.arange(10) + 10 * (fold - 1)
    rows = []
    for selection in ("best_acc", "best_auc"):
        for i in index:
            rows.append(
                {"fold": fold, "participant_id": f"sub-{i:02d}", "session_id": "n/a"}
                | {"selection": selection}
                | {f"label_{n}": int(labels[i, k]) for k, n in enumerate(LABELS)}
                | {f"prob_{n}": float(scores[i, k]) for k, n in enumerate(LABELS)}
            )
    pd.DataFrame(rows).to_csv(folder / "predictions.tsv", sep="\t", index=False)
    summary = {
        "method": method,
        "fold": fold,
        "parameters": {"total": 1000, "trainable": 10 if method == "probe" else 100, "percent": 1},
        "peak_memory_mib": 100.0,
        "memory_kind": "cpu_max_rss",
        "seconds_per_epoch": 1.0,
        "epochs_run": 5,
        "device": "cpu",
        "method_description": f"{method}, by hand",
        "versions": {"neuroadapt": "test"},
        "code": {"commit": "0" * 40, "dirty": False},
    }
    (folder / "run.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def ml_runs(tmp_path) -> tuple[list[Path], np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    labels = np.stack([np.arange(20) % 2, (np.arange(20) // 2) % 2], axis=1)
    scores = {
        "probe": rng.uniform(0, 1, (20, 2)),
        "lora": np.clip(labels * 0.6 + rng.uniform(0, 0.4, (20, 2)), 0, 1),
    }
    runs = [
        write_run(tmp_path / "runs", method, fold, labels, scores[method])
        for method in ("probe", "lora")
        for fold in (1, 2)
    ]
    return runs, labels, scores


def evaluate(runs: list[Path], tmp_path: Path) -> dict[str, pd.DataFrame]:
    outputs = {
        k: str(tmp_path / f"{k}.tsv")
        for k in ("predictions", "folds", "metrics", "resources", "tuning", "missing_modality")
    }
    experiment = {"methods": ["probe", "lora"], "reference": "probe", "task": "multilabel"}
    evaluate_experiment("exp", experiment, runs, {"bootstrap": 200}, outputs)
    return {k: pd.read_csv(v, sep="\t") for k, v in outputs.items()}


def test_macro_auc_is_the_mean_of_the_per_label_sklearn_aucs(ml_runs, tmp_path):
    runs, labels, scores = ml_runs
    tables = evaluate(runs, tmp_path)
    metrics = tables["metrics"].set_index(["method", "selection"])
    for method in ("probe", "lora"):
        row = metrics.loc[(method, "best_auc")]
        per_label = [roc_auc_score(labels[:, k], scores[method][:, k]) for k in range(2)]
        assert row.auc_finding_a == pytest.approx(per_label[0])
        assert row.auc_finding_b == pytest.approx(per_label[1])
        assert row.macro_auc == pytest.approx(np.mean(per_label))
        assert row.macro_auc_low <= row.macro_auc <= row.macro_auc_high
        assert row.auc_finding_a_low <= row.auc_finding_a <= row.auc_finding_a_high
        assert row.n == 20
        expected = multilabel_metrics(labels, scores[method], LABELS)
        for name in ("macro_f1", "subset_accuracy", "mean_accuracy", "mean_balanced_accuracy"):
            assert row[name] == pytest.approx(expected[name])
    lora = metrics.loc[("lora", "best_auc")]
    assert lora.delta_macro_auc == pytest.approx(
        lora.macro_auc - metrics.loc[("probe", "best_auc")].macro_auc
    )
    assert lora.delta_macro_auc_low <= lora.delta_macro_auc <= lora.delta_macro_auc_high
    assert lora.p_value < 0.05 and np.isnan(metrics.loc[("probe", "best_auc")].p_value)
    folds = tables["folds"]
    assert len(folds) == 2 * 2 * 2 and set(folds.n) == {10}
    fold_one = folds[(folds.method == "lora") & (folds.selection == "best_acc") & (folds.fold == 1)]
    expected = np.mean([roc_auc_score(labels[:10, k], scores["lora"][:10, k]) for k in range(2)])
    assert fold_one.macro_auc.item() == pytest.approx(expected)
    assert lora.macro_auc_fold_mean == pytest.approx(
        folds[(folds.method == "lora") & (folds.selection == "best_auc")].macro_auc.mean()
    )


# ----------------------------------------------------------------------------- training


def short_fit(tmp_path: Path) -> tuple[dict, dict]:
    """The toy multi-label cohort (32^3) and a 2-epoch linear probe on it (``tmp_path/run``)."""
    cohort = write_cohort(tmp_path / "toy", FINDINGS, ROLES, size=32)
    summary = run_training(
        experiment_name="toy_ml",
        experiment=EXPERIMENT,
        method_name="linear_probe",
        method_settings={"lr_head": 1e-2},
        training={"epochs": 2, "batch_size": 4, "seed": 0},
        backbone={"name": "resnet10_w025"},
        fold=1,
        **cohort,
        out_dir=str(tmp_path / "run"),
        resume_path=str(tmp_path / "resume.pt"),
        threads=1,
        progress=False,
    )
    return cohort, summary


def test_a_short_fit_writes_per_label_predictions(tmp_path):
    _, summary = short_fit(tmp_path)
    predictions = pd.read_csv(tmp_path / "run" / "predictions.tsv", sep="\t")
    assert list(predictions.columns) == [
        "fold",
        "participant_id",
        "session_id",
        "selection",
        "label_finding_a",
        "label_finding_b",
        "prob_finding_a",
        "prob_finding_b",
    ]
    assert len(predictions) == 2 * 4 and set(predictions.selection) == {"best_acc", "best_auc"}
    assert predictions[["prob_finding_a", "prob_finding_b"]].stack().between(0, 1).all()
    assert predictions.label_finding_b.tolist()[:4] == [0, 0, 1, 1]
    history = pd.read_csv(tmp_path / "run" / "history.tsv", sep="\t")
    assert {"val_loss", "val_accuracy", "val_subset_accuracy", "val_auc"} <= set(history.columns)
    assert set(summary["selected"]) == {"best_acc", "best_auc"}
    head = torch.load(tmp_path / "run" / "model-best_auc.pt", weights_only=True)["state"]
    assert any(v.shape[0] == 2 for k, v in head.items() if k.endswith("bias"))  # 2 logits


# ----------------------------------------------------------------------------- config


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_the_demo_has_a_multilabel_experiment_of_image_methods():
    config = validate_config(default_config())
    experiment = config["experiments"]["dti_findings"]
    assert experiment["task"] == "multilabel" and len(experiment["target"]) == 3
    config = default_config()
    config["experiments"]["dti_findings"]["methods"] = ["full_finetune", "scratch", "dora"]
    config["experiments"]["dti_findings"]["reference"] = "full_finetune"
    validate_config(config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"methods": ["lora", "pemma"]},
            r"'experiments.dti_findings.methods': pemma cannot be trained on task 'multilabel'",
        ),
        (
            {"inputs": ["fa", "md", "clinical"], "methods": ["lora"]},
            r"'experiments.dti_findings.inputs': multilabel training reads image inputs only, "
            r"not clinical",
        ),
        (
            {"backbone": "unetr_tiny"},
            r"'experiments.dti_findings.backbone.name': unetr_tiny does not fit task 'multilabel'",
        ),
        ({"target": "cst_degeneration"}, r"a multilabel task needs a list of 0/1 columns"),
    ],
)
def test_a_multilabel_experiment_that_cannot_be_trained_stops_at_start_up(change, message):
    config = default_config()
    config["experiments"]["dti_findings"] |= copy.deepcopy(change)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


# ----------------------------------------------------------------------------- report


def test_the_report_shows_the_multilabel_section(ml_runs, tmp_path):
    from neuroadapt.report.html import build_report

    runs, labels, _ = ml_runs
    tables = evaluate(runs, tmp_path)
    del tables
    subjects = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(20)],
            "session_id": "n/a",
            "finding_a": labels[:, 0],
            "finding_b": labels[:, 1],
        }
    )
    subjects.to_csv(tmp_path / "subjects.tsv", sep="\t", index=False)
    splits = tmp_path / "splits"
    splits.mkdir()
    roles = ["test"] * 10 + ["train"] * 10
    pd.DataFrame({"participant_id": subjects.participant_id, "role": roles}).to_csv(
        splits / "fold-1.tsv", sep="\t", index=False
    )
    shutil.copy(REPO / "neuroadapt" / "report" / "templates" / "report.html", tmp_path / "t.html")
    (splits / "balance.png").write_bytes(_png())
    config = {
        "datasets": {"ds": {"label": None}},
        "experiments": {
            "exp": EXPERIMENT
            | {"dataset": "ds", "methods": ["probe", "lora"], "backbone": "resnet10_w025"}
        },
    }
    layout = {
        "datasets": {"ds": {"subjects": str(tmp_path / "subjects.tsv")}},
        "experiments": {
            "exp": {
                "splits": str(splits),
                **{
                    k: str(tmp_path / f"{k}.tsv")
                    for k in ("metrics", "folds", "predictions", "resources")
                },
                "runs": [str(r / "run.json") for r in runs],
            }
        },
    }
    out = tmp_path / "report" / "index.html"
    build_report(config, layout, out)
    html = out.read_text()
    assert "AUC per finding" in html and "macro AUC per fold" in html
    assert "ΔmacroAUC vs probe" in html and "detect 2 findings" in html
    assert "finding_a: 5" in html  # positives per fold role
    _open_in_browser(out)


def _png() -> bytes:
    from neuroadapt.report.figures import png
    from neuroadapt.report.style import plt

    figure, _ = plt.subplots(figsize=(1, 1))
    return png(figure)


def _open_in_browser(report: Path) -> None:
    """Open the report in Chromium (when installed): no errors, every image decodes."""
    chromium = shutil.which("chromium")
    if chromium is None:
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        problems = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(report.as_uri())
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
        )
        browser.close()
    assert problems == []
    alts = [alt for alt, ok in images if ok]
    assert len(alts) == len(images) and "AUC per finding of exp" in alts


# ----------------------------------------------------------------------------- demo


def test_the_demo_plants_balanced_findings_in_their_regions():
    from neuroadapt.demo import brain
    from neuroadapt.demo.dwi import FINDINGS, DwiCohortSpec, _SubjectModel, draw_participants

    spec = DwiCohortSpec(n_subjects=36, finding_size=1.0)
    table = draw_participants(spec)
    combos = table[list(FINDINGS)].astype(str).agg("".join, axis=1).value_counts()
    assert len(combos) == 8 and set(combos) == {4, 5}
    without = draw_participants(DwiCohortSpec(n_subjects=36))
    assert not set(FINDINGS) & set(without.columns)  # no columns unless planted
    pd.testing.assert_frame_equal(table[without.columns], without)  # nothing else changes
    # one point in every tract (white matter), one in other white matter, one in grey matter
    regions = [brain.region_index(r) for r in brain.REGIONS] + [0, 0]
    sample = brain.PhantomSample(
        tissue=np.array([brain.WHITE_MATTER] * 8 + [brain.GREY_MATTER], dtype=np.int8),
        region=np.array(regions, dtype=np.int8),
        fibre=np.tile([1.0, 0.0, 0.0], (len(regions), 1)),
    )
    anatomy = brain.BrainAnatomy((60.0, 75.0, 56.0), 1.0, (0.0, 0.0, 0.0))
    row = table.iloc[0].copy()  # sub-001: TD, so no diagnosis effect
    healthy = _SubjectModel.draw(spec, anatomy, row.drop(list(FINDINGS)), np.random.default_rng(0))
    axial0, radial0, _ = healthy.tissue_parameters(spec, sample)
    slf = [name.startswith("slf") for name in brain.REGIONS] + [False, False]
    expected = {  # (radial, axial) factor per point
        "slf_degeneration": (np.where(slf, 2.0, 1.0), np.ones(9)),
        "diffuse_wm_injury": (np.array([1.0] * 7 + [1.25, 1.0]), np.ones(9)),
        "gm_oedema": (np.array([1.0] * 8 + [1.25]), np.array([1.0] * 8 + [1.25])),
    }
    for name, (radial_factor, axial_factor) in expected.items():
        row[list(FINDINGS)] = [int(n == name) for n in FINDINGS]
        model = _SubjectModel.draw(spec, anatomy, row, np.random.default_rng(0))
        axial, radial, _ = model.tissue_parameters(spec, sample)
        np.testing.assert_allclose(radial / radial0, radial_factor, err_msg=name)
        np.testing.assert_allclose(axial / axial0, axial_factor, err_msg=name)
