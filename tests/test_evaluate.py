"""The evaluate rule's tables, from hand-made training runs with known predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.evaluate import evaluate_experiment
from neuroadapt.metrics import binary_metrics

LABELS = np.array([0, 1] * 10)


def write_run(root: Path, method: str, fold: int, scores: dict[str, np.ndarray]) -> Path:
    """A run folder like the train rule's: predictions of 10 test subjects per fold."""
    folder = root / method / f"fold-{fold}"
    folder.mkdir(parents=True)
    index = np.arange(10) + 10 * (fold - 1)
    rows = [
        {
            "fold": fold,
            "participant_id": f"sub-{i:02d}",
            "session_id": "n/a",
            "selection": selection,
            "label": LABELS[i],
            "probability": values[i],
        }
        for selection, values in scores.items()
        for i in index
    ]
    pd.DataFrame(rows).to_csv(folder / "predictions.tsv", sep="\t", index=False)
    summary = {
        "method": method,
        "fold": fold,
        "parameters": {
            "total": 1000,
            "trainable": 10 if method != "full" else 1000,
            "percent": 1.0,
        },
        "peak_memory_mib": 100.0 * fold,
        "memory_kind": "cpu_max_rss",
        "seconds_per_epoch": float(fold),
        "epochs_run": 5,
        "device": "cpu",
    }
    (folder / "run.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    perfect = LABELS * 0.8 + 0.1
    chance = rng.uniform(0, 1, len(LABELS))
    folders = []
    for fold in (1, 2):
        folders.append(write_run(tmp_path, "probe", fold, {"best_acc": chance, "best_auc": chance}))
        folders.append(write_run(tmp_path, "lora", fold, {"best_acc": perfect, "best_auc": chance}))
    return folders


def evaluate(runs, tmp_path, experiment=None):
    outputs = {
        key: str(tmp_path / f"{key}.tsv")
        for key in ("predictions", "folds", "metrics", "resources", "tuning", "missing_modality")
    }
    experiment = experiment or {"methods": ["probe", "lora"], "reference": "probe"}
    metrics = evaluate_experiment("exp", experiment, runs, {"bootstrap": 200}, outputs)
    return metrics, {k: pd.read_csv(v, sep="\t") for k, v in outputs.items()}


def test_pooled_metrics_equal_the_metrics_of_all_out_of_fold_predictions(runs, tmp_path):
    metrics, tables = evaluate(runs, tmp_path)
    assert len(tables["predictions"]) == 2 * 2 * 2 * 10  # methods x folds x selections x subjects
    row = metrics.set_index(["method", "selection"]).loc[("lora", "best_acc")]
    assert row.n == 20 and row.auc == 1.0 and row.accuracy == 1.0 and row.mcc == 1.0
    chance = tables["predictions"].query("method == 'probe' and selection == 'best_auc'")
    expected = binary_metrics(chance.label.to_numpy(), chance.probability.to_numpy())
    probe = metrics.set_index(["method", "selection"]).loc[("probe", "best_auc")]
    assert probe.auc == pytest.approx(expected["auc"])
    assert probe.auc_low <= probe.auc <= probe.auc_high


def test_fold_table_and_fold_mean_and_sd(runs, tmp_path):
    metrics, tables = evaluate(runs, tmp_path)
    folds = tables["folds"]
    assert len(folds) == 2 * 2 * 2 and (folds.n == 10).all()
    probe = folds.query("method == 'probe' and selection == 'best_acc'").accuracy
    row = metrics.set_index(["method", "selection"]).loc[("probe", "best_acc")]
    assert row.accuracy_fold_mean == pytest.approx(probe.mean())
    assert row.accuracy_fold_sd == pytest.approx(probe.std(ddof=1))


def test_each_method_is_compared_with_the_reference_on_the_same_subjects(runs, tmp_path):
    metrics, _ = evaluate(runs, tmp_path)
    rows = metrics.set_index(["method", "selection"])
    assert rows.loc[("probe", "best_acc")].p_value != rows.loc[("probe", "best_acc")].p_value  # NaN
    better = rows.loc[("lora", "best_acc")]
    assert better.delta_auc == pytest.approx(1.0 - rows.loc[("probe", "best_acc")].auc)
    assert better.delta_auc_low > 0 and better.p_value < 0.05
    same = rows.loc[("lora", "best_auc")]  # identical scores to the reference
    assert same.delta_auc == 0 and same.p_value == 1.0
    assert (metrics.reference == "probe").all()


def test_resources_summarise_the_folds(runs, tmp_path):
    _, tables = evaluate(runs, tmp_path)
    resources = tables["resources"].set_index("method")
    assert resources.loc["lora"].peak_memory_mib == 200.0  # the worst fold
    assert resources.loc["lora"].seconds_per_epoch == 1.5  # the mean over folds
    assert resources.loc["lora"].folds == 2 and resources.loc["lora"].trainable_parameters == 10


def test_tuning_table_gathers_the_trials_of_tuned_runs(runs, tmp_path):
    _, untuned = evaluate(runs, tmp_path / "plain")
    assert untuned["tuning"].empty
    assert list(untuned["tuning"].columns[:4]) == ["experiment", "method", "fold", "trial"]
    for fold, folder in ((1, runs[1]), (2, runs[3])):  # lora's two folds
        summary = json.loads((folder / "run.json").read_text())
        summary["tuning"] = {"trials": 2, "chosen_trial": fold, "chosen": {}}
        (folder / "run.json").write_text(json.dumps(summary))
        pd.DataFrame(
            {
                "trial": [1, 2],
                "lr_adapters": [1e-3, 1e-2],
                "lr_head": [1e-3, 1e-2],
                "val_loss": [0.6, 0.5] if fold == 2 else [0.4, 0.5],
                "epochs_run": [5, 4],
                "chosen": [fold == 1, fold == 2],
            }
        ).to_csv(folder / "tuning.tsv", sep="\t", index=False)
    _, tables = evaluate(runs, tmp_path / "tuned")
    tuning = tables["tuning"]
    assert list(tuning.columns) == [
        "experiment", "method", "fold", "trial", "lr_adapters", "lr_head", "val_loss",
        "epochs_run", "chosen",
    ]  # fmt: skip
    assert set(tuning.method) == {"lora"} and list(tuning.fold) == [1, 1, 2, 2]
    chosen = tuning[tuning.chosen]
    assert list(chosen.lr_head) == [1e-3, 1e-2] and list(chosen.val_loss) == [0.4, 0.5]


def test_missing_modality_table_pools_each_share_and_adds_share_zero(runs, tmp_path):
    _, image_only = evaluate(runs, tmp_path / "image")
    assert image_only["missing_modality"].empty  # no run wrote the file
    assert list(image_only["missing_modality"].columns) == [
        "method", "selection", "modality", "fraction", "n", "removed", "auc", "auc_low",
        "auc_high",
    ]  # fmt: skip
    perfect = LABELS * 0.8 + 0.1
    for folder in (runs[1], runs[3]):  # lora (perfect at best_acc), both folds
        predictions = pd.read_csv(folder / "predictions.tsv", sep="\t")
        rows = predictions[predictions.selection == "best_acc"]
        frames = []
        for fraction in (0.5, 1.0):
            frame = rows.drop(columns="probability").copy()
            lost = np.arange(len(frame)) < round(fraction * len(frame))
            # without the report, the model predicts the flipped score for those who lost it
            scores = perfect[frame.participant_id.str[4:].astype(int)]
            frame["modality"], frame["fraction"], frame["removed"] = "report_text", fraction, lost
            frame["probability"] = np.where(lost, 1 - scores, scores)
            frames.append(frame)
        pd.concat(frames).to_csv(folder / "missing_modality.tsv", sep="\t", index=False)
    _, tables = evaluate(runs, tmp_path / "multimodal")
    table = tables["missing_modality"].set_index(["method", "selection", "modality", "fraction"])
    assert set(table.index.get_level_values("method")) == {"lora"}  # probe wrote none
    assert set(table.index.get_level_values("modality")) == {"report_text"}
    zero = table.loc[("lora", "best_acc", "report_text", 0.0)]
    assert (zero.n, zero.removed, zero.auc) == (20, 0, 1.0)  # the ordinary predictions
    whole = table.loc[("lora", "best_acc", "report_text", 1.0)]
    assert (whole.n, whole.removed, whole.auc) == (20, 20, 0.0)
    half = table.loc[("lora", "best_acc", "report_text", 0.5)]
    mixed = tables["predictions"].query("method == 'lora' and selection == 'best_acc'")
    lost = np.tile(np.arange(10) < 5, 2)
    flipped = np.where(lost, 1 - mixed.probability.to_numpy(), mixed.probability.to_numpy())
    expected = binary_metrics(mixed.label.to_numpy(), flipped)["auc"]
    assert half.removed == 10 and half.auc == pytest.approx(expected)
    assert half.auc_low <= half.auc <= half.auc_high


def test_an_incomplete_run_and_a_wrong_reference_are_clear_errors(runs, tmp_path):
    (runs[0] / "predictions.tsv").unlink()
    with pytest.raises(InputError, match="is not a complete training run") as error:
        evaluate(runs, tmp_path)
    assert str(runs[0]) in str(error.value)
    with pytest.raises(ConfigError, match="'experiments.exp.reference': 'x' is not one of"):
        evaluate(runs[1:], tmp_path, {"methods": ["probe", "lora"], "reference": "x"})
    assert not (tmp_path / "metrics.tsv").exists()


# --- segmentation + survival (paper 5) ----------------------------------------------------


def write_segsurv_run(root: Path, method: str, fold: int, risks: np.ndarray, dice: float) -> Path:
    """A CT/PET run folder: 6 test subjects per fold, times 1..12 months, all events."""
    folder = root / method / f"fold-{fold}"
    folder.mkdir(parents=True)
    index = np.arange(6) + 6 * (fold - 1)
    rows = [
        {
            "fold": fold,
            "participant_id": f"sub-{i:02d}",
            "session_id": "n/a",
            "selection": selection,
            "event": 1,
            "time": float(i + 1),
            "risk": risks[i],
            "dice": dice,
            "hd95_mm": np.nan if i == 0 else 4.0,  # an empty prediction: HD95 undefined
        }
        for selection in ("best_dice", "best_cindex")
        for i in index
    ]
    pd.DataFrame(rows).to_csv(folder / "predictions.tsv", sep="\t", index=False)
    summary = {
        "method": method,
        "fold": fold,
        "parameters": {"total": 1000, "trainable": 10, "percent": 1.0},
        "peak_memory_mib": 100.0,
        "memory_kind": "cpu_max_rss",
        "seconds_per_epoch": 1.0,
        "epochs_run": 5,
        "device": "cpu",
    }
    (folder / "run.json").write_text(json.dumps(summary))
    return folder


def test_segmentation_survival_metrics_and_c_index_comparison(tmp_path):
    perfect = -np.arange(12.0)  # earlier death, higher risk: C = 1
    reversed_ = np.arange(12.0)  # C = 0
    folders = [
        write_segsurv_run(tmp_path, method, fold, risks, dice)
        for method, risks, dice in (("pemma", perfect, 0.8), ("ct_only", reversed_, 0.5))
        for fold in (1, 2)
    ]
    outputs = {
        k: str(tmp_path / f"{k}.tsv")
        for k in ("predictions", "folds", "metrics", "resources", "tuning", "missing_modality")
    }
    experiment = {
        "task": "segmentation+survival",
        "methods": ["ct_only", "pemma"],
        "reference": "ct_only",
    }
    metrics = evaluate_experiment("hnc", experiment, folders, {"bootstrap": 200}, outputs)
    row = metrics[(metrics.method == "pemma") & (metrics.selection == "best_cindex")].iloc[0]
    assert row.c_index == 1.0 and row.dice == pytest.approx(0.8) and row.hd95_mm == 4.0
    assert row.c_index_low == 1.0 and row.c_index_fold_mean == 1.0
    assert row.delta_c_index == 1.0 and row.delta_c_index_low == 1.0 and row.p_value == 0.0
    base = metrics[(metrics.method == "ct_only") & (metrics.selection == "best_dice")].iloc[0]
    assert base.c_index == 0.0 and np.isnan(base.delta_c_index) and base.reference == "ct_only"
    folds = pd.read_csv(outputs["folds"], sep="\t")
    assert set(folds.columns) >= {"c_index", "dice", "hd95_mm"} and len(folds) == 8
