"""The ``evaluate`` rule: out-of-fold metrics of every method of an experiment.

Reads each training run's folder (``predictions.tsv``, ``run.json``) and writes, under
``results/<experiment>/``:

* ``predictions.tsv``: every run's out-of-fold test predictions, one table;
* ``folds.tsv``: metrics per method, selection and fold;
* ``metrics.tsv``: one row per method and selection (best validation accuracy / AUC; for
  segmentation+survival, best validation Dice / C-index): metrics pooled over the
  out-of-fold predictions with bootstrap 95% intervals (``<metric>_low``/``_high``), their
  mean and sd over folds, and the paired-bootstrap difference against the experiment's
  reference method (AUC; C-index for survival; macro-AUC for multilabel)
  (:mod:`neuroadapt.metrics`). Multilabel experiments get
  :data:`~neuroadapt.metrics.MULTILABEL_METRICS` and every label's AUC (``auc_<label>``),
  each with its interval and fold mean/sd; the labels are the runs' ``prob_<label>``
  prediction columns;
* ``resources.tsv``: per method, total/trainable parameters, peak memory and seconds per
  epoch (mean over folds).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.experiments import reference_method
from neuroadapt.io import atomic_write_text
from neuroadapt.metrics import (
    BINARY_METRICS,
    binary_metrics,
    bootstrap_auc,
    bootstrap_intervals,
    bootstrap_table_intervals,
    label_columns,
    multilabel_table_metrics,
    paired_auc_comparison,
    paired_table_comparison,
    segmentation_survival_metrics,
)
from neuroadapt.spec import spec_from_mapping

__all__ = ["EvaluationSettings", "evaluate_experiment"]


@dataclass(frozen=True)
class EvaluationSettings:
    """``evaluation`` of the config: bootstrap resamples, their seed, interval level and the
    probability threshold of a positive prediction."""

    bootstrap: int = 1000
    seed: int = 0
    level: float = 0.95
    threshold: float = 0.5

    def check(self, where: str) -> None:
        if self.bootstrap < 100:
            raise ConfigError(f"{where}.bootstrap", "too few resamples for an interval", "use 1000")
        if not 0 < self.level < 1 or not 0 < self.threshold < 1:
            raise ConfigError(where, "level and threshold lie in (0, 1)", "e.g. 0.95 and 0.5")


def read_runs(run_dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, list[dict]]:
    """All runs' predictions (with a ``method`` column) and their run.json summaries."""
    frames, summaries = [], []
    for folder in map(Path, run_dirs):
        try:
            summary = json.loads((folder / "run.json").read_text())
            frame = pd.read_csv(folder / "predictions.tsv", sep="\t", dtype={"session_id": str})
        except (OSError, ValueError) as error:
            raise InputError(
                folder, f"is not a complete training run ({error})", "rerun it"
            ) from None
        frame.insert(0, "method", summary["method"])
        frames.append(frame)
        summaries.append(summary)
    return pd.concat(frames, ignore_index=True), summaries


#: Columns of tuning.tsv before the tuned settings (which differ by method).
TUNING_KEYS = ["experiment", "method", "fold", "trial"]


def tuning_table(experiment: str, run_dirs: Sequence[str | Path], summaries) -> pd.DataFrame:
    """Every tuning trial of the experiment's runs: experiment, method, fold, trial, the
    tuned settings (a column each), validation loss, epochs run and whether it was chosen.
    Runs trained without tuning have no rows."""
    frames = []
    for folder, summary in zip(map(Path, run_dirs), summaries, strict=True):
        if not summary.get("tuning"):
            continue
        frame = pd.read_csv(folder / "tuning.tsv", sep="\t")
        frame.insert(0, "fold", summary["fold"])
        frame.insert(0, "method", summary["method"])
        frame.insert(0, "experiment", experiment)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*TUNING_KEYS, "val_loss", "epochs_run", "chosen"])
    table = pd.concat(frames, ignore_index=True)
    tail = ["val_loss", "epochs_run", "chosen"]
    settings = [c for c in table.columns if c not in TUNING_KEYS + tail]
    return table[TUNING_KEYS + settings + tail]


#: What a multimodal train job writes beside predictions.tsv (neuroadapt.missing_modality).
MISSING_MODALITY_FILE = "missing_modality.tsv"
MISSING_MODALITY_COLUMNS = [
    "method",
    "selection",
    "modality",
    "fraction",
    "n",
    "removed",
    "auc",
    "auc_low",
    "auc_high",
]


def missing_modality_table(
    run_dirs: Sequence[str | Path],
    summaries: Sequence[Mapping],
    predictions: pd.DataFrame,
    settings: EvaluationSettings,
) -> pd.DataFrame:
    """Out-of-fold AUC with its bootstrap interval of each multimodal method with each
    modality removed from a share of the test subjects (``neuroadapt.missing_modality``):
    method, selection, modality, fraction (0: nothing removed, the ordinary predictions), n,
    removed (subjects that lost it), auc, auc_low, auc_high. Runs without the file (image
    methods) have no rows."""
    frames = []
    for folder, summary in zip(map(Path, run_dirs), summaries, strict=True):
        path = folder / MISSING_MODALITY_FILE
        if path.is_file():
            frame = pd.read_csv(path, sep="\t", dtype={"session_id": str})
            frame.insert(0, "method", summary["method"])
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=MISSING_MODALITY_COLUMNS)
    missing = pd.concat(frames, ignore_index=True)
    ordinary = [  # share 0 of each modality a method was tested without
        predictions[predictions.method == method].assign(
            modality=modality, fraction=0.0, removed=False
        )
        for method, modality in missing[["method", "modality"]]
        .drop_duplicates()
        .itertuples(index=False)
    ]
    rows = []
    pooled = pd.concat([*ordinary, missing], ignore_index=True)
    for (method, selection, modality, fraction), group in pooled.groupby(
        ["method", "selection", "modality", "fraction"], sort=False
    ):
        auc, low, high = bootstrap_auc(
            group.label.to_numpy(),
            group.probability.to_numpy(),
            settings.bootstrap,
            settings.seed,
            settings.level,
        )
        rows.append(
            [
                method,
                selection,
                modality,
                fraction,
                len(group),
                int(group.removed.sum()),
                auc,
                low,
                high,
            ]
        )
    table = pd.DataFrame(rows, columns=MISSING_MODALITY_COLUMNS)
    return table.sort_values(["method", "selection", "modality", "fraction"], kind="stable")


def fold_metrics(predictions: pd.DataFrame, threshold: float) -> pd.DataFrame:
    rows = []
    for (method, selection, fold), group in predictions.groupby(
        ["method", "selection", "fold"], sort=False
    ):
        rows.append(
            {
                "method": method,
                "selection": selection,
                "fold": fold,
                "n": len(group),
                **binary_metrics(group.label.to_numpy(), group.probability.to_numpy(), threshold),
            }
        )
    return pd.DataFrame(rows)


def spread_columns(
    names: Sequence[str], intervals: Mapping, folds: pd.DataFrame, method: str, selection: str
) -> dict[str, float]:
    """``<metric>_low``/``_high`` (bootstrap) and ``_fold_mean``/``_fold_sd`` of each metric."""
    per_fold = folds[(folds.method == method) & (folds.selection == selection)]
    columns = {}
    for name in names:
        columns[f"{name}_low"], columns[f"{name}_high"] = intervals[name]
        columns[f"{name}_fold_mean"] = float(per_fold[name].mean())
        columns[f"{name}_fold_sd"] = float(per_fold[name].std(ddof=1))
    return columns


def paired_with_reference(
    group: pd.DataFrame, predictions: pd.DataFrame, reference: str, selection: str
) -> pd.DataFrame:
    """``group``'s rows joined with the reference method's on the same subjects (``_ref``)."""
    base = predictions[(predictions.method == reference) & (predictions.selection == selection)]
    return group.merge(base, on=["participant_id", "session_id"], suffixes=("", "_ref"))


def pooled_metrics(
    predictions: pd.DataFrame,
    folds: pd.DataFrame,
    reference: str,
    settings: EvaluationSettings,
) -> pd.DataFrame:
    rows = []
    for (method, selection), group in predictions.groupby(["method", "selection"], sort=False):
        labels, scores = group.label.to_numpy(), group.probability.to_numpy()
        row = {"method": method, "selection": selection, "n": len(group)}
        row |= binary_metrics(labels, scores, settings.threshold)
        intervals = bootstrap_intervals(
            labels,
            scores,
            settings.bootstrap,
            settings.seed,
            settings.level,
            lambda y, p: binary_metrics(y, p, settings.threshold),
        )
        row |= spread_columns(BINARY_METRICS, intervals, folds, method, selection)
        row["reference"] = reference
        paired = paired_with_reference(group, predictions, reference, selection)
        if method == reference or len(paired) != len(group):
            row |= {"delta_auc": np.nan, "delta_auc_low": np.nan, "delta_auc_high": np.nan}
            row["p_value"] = np.nan
        else:
            test = paired_auc_comparison(
                paired.label.to_numpy(),
                paired.probability.to_numpy(),
                paired.probability_ref.to_numpy(),
                settings.bootstrap,
                settings.seed,
                settings.level,
            )
            row |= {
                "delta_auc": test["delta_auc"],
                "delta_auc_low": test["low"],
                "delta_auc_high": test["high"],
                "p_value": test["p"],
            }
        rows.append(row)
    return pd.DataFrame(rows)


def table_fold_metrics(
    predictions: pd.DataFrame, metric: Callable[[pd.DataFrame], dict[str, float]]
) -> pd.DataFrame:
    """``metric(rows)`` of every method, selection and fold (``metric`` reads a predictions
    table)."""
    rows = [
        {"method": method, "selection": selection, "fold": fold, "n": len(group)} | metric(group)
        for (method, selection, fold), group in predictions.groupby(
            ["method", "selection", "fold"], sort=False
        )
    ]
    return pd.DataFrame(rows)


def table_pooled_metrics(
    predictions: pd.DataFrame,
    folds: pd.DataFrame,
    reference: str,
    settings: EvaluationSettings,
    metric: Callable[[pd.DataFrame], dict[str, float]],
    compared: str,
) -> pd.DataFrame:
    """Per method and selection: ``metric`` of the pooled out-of-fold predictions, each
    value's bootstrap interval and fold mean/sd, and the paired-bootstrap difference of the
    ``compared`` metric against ``reference`` on the same subjects (``delta_<compared>``,
    ``_low``, ``_high``, ``p_value``)."""
    rows = []
    for (method, selection), group in predictions.groupby(["method", "selection"], sort=False):
        row = {"method": method, "selection": selection, "n": len(group)}
        values = metric(group)
        row |= values
        intervals = bootstrap_table_intervals(
            group, metric, settings.bootstrap, settings.seed, settings.level
        )
        row |= spread_columns(list(values), intervals, folds, method, selection)
        row["reference"] = reference
        paired = paired_with_reference(group, predictions, reference, selection)
        if method == reference or len(paired) != len(group):
            test = {"delta": np.nan, "low": np.nan, "high": np.nan, "p": np.nan}
        else:
            test = paired_table_comparison(
                paired,
                lambda t: metric(t)[compared],
                settings.bootstrap,
                settings.seed,
                settings.level,
            )
        row |= {
            f"delta_{compared}": test["delta"],
            f"delta_{compared}_low": test["low"],
            f"delta_{compared}_high": test["high"],
            "p_value": test["p"],
        }
        rows.append(row)
    return pd.DataFrame(rows)


def segsurv_fold_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """C-index, Dice and HD95 per method, selection and fold."""
    return table_fold_metrics(predictions, segmentation_survival_metrics)


def segsurv_pooled_metrics(
    predictions: pd.DataFrame, folds: pd.DataFrame, reference: str, settings: EvaluationSettings
) -> pd.DataFrame:
    """Pooled out-of-fold C-index, Dice and HD95 with bootstrap intervals and fold mean/sd,
    and the paired-bootstrap C-index difference against ``reference``."""
    return table_pooled_metrics(
        predictions, folds, reference, settings, segmentation_survival_metrics, "c_index"
    )


def multilabel_metric(threshold: float, names: Sequence[str] | None = None):
    """The metric function of a multi-label predictions table (labels from its ``prob_*``
    columns unless ``names`` are given), for :func:`table_fold_metrics` and
    :func:`table_pooled_metrics`."""

    def metric(table: pd.DataFrame) -> dict[str, float]:
        return multilabel_table_metrics(table, names or label_columns(table), threshold)

    return metric


def resources(summaries: Sequence[Mapping]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "method": s["method"],
            "fold": s["fold"],
            "total_parameters": s["parameters"]["total"],
            "trainable_parameters": s["parameters"]["trainable"],
            "trainable_percent": s["parameters"]["percent"],
            "peak_memory_mib": s["peak_memory_mib"],
            "memory_kind": s["memory_kind"],
            "seconds_per_epoch": s["seconds_per_epoch"],
            "epochs_run": s["epochs_run"],
            "device": s["device"],
        }
        for s in summaries
    )
    return (
        frame.groupby("method", sort=False)
        .agg(
            total_parameters=("total_parameters", "first"),
            trainable_parameters=("trainable_parameters", "first"),
            trainable_percent=("trainable_percent", "first"),
            peak_memory_mib=("peak_memory_mib", "max"),
            memory_kind=("memory_kind", "first"),
            seconds_per_epoch=("seconds_per_epoch", "mean"),
            epochs_run=("epochs_run", "mean"),
            device=("device", "first"),
            folds=("fold", "count"),
        )
        .reset_index()
    )


def evaluate_experiment(
    name: str,
    experiment: Mapping,
    run_dirs: Sequence[str | Path],
    evaluation: Mapping | None,
    outputs: Mapping[str, str],
) -> pd.DataFrame:
    """Write ``outputs`` (keys predictions, folds, metrics, resources, tuning,
    missing_modality); returns metrics."""
    settings = spec_from_mapping(EvaluationSettings, evaluation, "evaluation")
    reference = reference_method(experiment, f"experiments.{name}")
    predictions, summaries = read_runs(run_dirs)
    task = experiment.get("task", "binary")
    if task == "segmentation+survival":
        folds = segsurv_fold_metrics(predictions)
        metrics = segsurv_pooled_metrics(predictions, folds, reference, settings)
    elif task == "multilabel":
        names = label_columns(predictions)
        if not names:
            raise InputError(
                run_dirs[0],
                "holds no per-label probabilities (prob_<label> columns) for a multilabel task",
                "rerun the experiment's train jobs (snakemake --forcerun train)",
            )
        metric = multilabel_metric(settings.threshold, names)
        folds = table_fold_metrics(predictions, metric)
        metrics = table_pooled_metrics(predictions, folds, reference, settings, metric, "macro_auc")
    else:
        folds = fold_metrics(predictions, settings.threshold)
        metrics = pooled_metrics(predictions, folds, reference, settings)
    tables = {
        "predictions": predictions,
        "folds": folds,
        "metrics": metrics,
        "resources": resources(summaries),
        "tuning": tuning_table(name, run_dirs, summaries),
        "missing_modality": missing_modality_table(run_dirs, summaries, predictions, settings),
    }
    for key, table in tables.items():  # everything computed before anything is written
        atomic_write_text(
            outputs[key],
            table.to_csv(
                sep="\t", index=False, na_rep="n/a", lineterminator="\n", float_format="%.6g"
            ),
        )
    return tables["metrics"]
