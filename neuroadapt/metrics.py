"""Metrics, bootstrap confidence intervals and paired method comparison.

Classification metrics come from scikit-learn; the C-index from scikit-survival (lifelines,
the usual choice, pins pandas < 3); segmentation scores (Dice, HD95) are computed per subject
in training (MONAI) and averaged here. The intervals are percentile bootstraps over samples
(subjects.tsv rows); the comparison of two methods is a *paired* bootstrap of the AUC
difference on the same out-of-fold samples (both methods' scores resampled with one set of
indices), with the two-sided p-value ``2 * min(P(delta <= 0), P(delta >= 0))``. The paired
bootstrap is used rather than DeLong's test because it applies unchanged to every metric
and needs no normality assumption for small cohorts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

__all__ = [
    "bootstrap_auc",
    "BINARY_METRICS",
    "MULTILABEL_METRICS",
    "SEGMENTATION_SURVIVAL_METRICS",
    "binary_metrics",
    "bootstrap_intervals",
    "bootstrap_table_intervals",
    "harrell_c",
    "label_columns",
    "macro_auc",
    "multilabel_metrics",
    "multilabel_table_metrics",
    "paired_auc_comparison",
    "paired_table_comparison",
    "safe_auc",
    "segmentation_survival_metrics",
]

BINARY_METRICS = (
    "auc",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "sensitivity",
    "specificity",
    "mcc",
)


#: Multi-label classification (paper 3: several 0/1 findings per scan), the labels' own
#: metrics averaged over labels (each label counts once, whatever its prevalence): macro
#: ROC AUC, macro F1, subset (exact-match) accuracy, mean per-label accuracy (1 - Hamming
#: loss) and mean per-label balanced accuracy. Besides these, :func:`multilabel_metrics`
#: gives every label's own AUC as ``auc_<label>``.
MULTILABEL_METRICS = (
    "macro_auc",
    "macro_f1",
    "subset_accuracy",
    "mean_accuracy",
    "mean_balanced_accuracy",
)

#: Pooled over out-of-fold subjects: Harrell's C of the predicted risks, mean Dice and mean
#: HD95 (mm; subjects with an empty predicted or true mask, where it is undefined, left out).
SEGMENTATION_SURVIVAL_METRICS = ("c_index", "dice", "hd95_mm")


def harrell_c(events: np.ndarray, times: np.ndarray, risks: np.ndarray) -> float:
    """Harrell's concordance index of ``risks`` (higher = earlier event), scikit-survival;
    NaN when no pair can be ordered (no event)."""
    from sksurv.metrics import concordance_index_censored

    events = np.asarray(events).astype(bool)
    if not events.any():
        return float("nan")
    return float(concordance_index_censored(events, np.asarray(times, float), risks)[0])


def segmentation_survival_metrics(table: pd.DataFrame) -> dict[str, float]:
    """:data:`SEGMENTATION_SURVIVAL_METRICS` of a predictions table (columns event, time,
    risk, dice, hd95_mm)."""
    hd95 = table.hd95_mm.to_numpy(float)
    return {
        "c_index": harrell_c(table.event.to_numpy(), table.time.to_numpy(), table.risk.to_numpy()),
        "dice": float(table.dice.mean()),
        "hd95_mm": float(np.nanmean(hd95)) if np.isfinite(hd95).any() else float("nan"),
    }


def safe_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present (AUC is undefined there)."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(skm.roc_auc_score(labels, scores))


def bootstrap_auc(
    labels: np.ndarray,
    scores: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """ROC AUC and its percentile bootstrap interval ``(auc, low, high)``, NaN where
    undefined.

    Vectorised over the resamples (Mann-Whitney U from mid-ranks of each resample, equal to
    scikit-learn's AUC with ties): many intervals per experiment (the missing-modality table)
    would take minutes one ``roc_auc_score`` call per resample. Resamples drawn with one
    class only are left out, as in :func:`bootstrap_intervals`."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    index = _bootstrap_indices(len(labels), n_boot, seed)
    y, s = labels[index], scores[index]
    positives = y.sum(axis=1)
    negatives = y.shape[1] - positives
    ranks = rankdata(s, axis=1)
    u = (ranks * y).sum(axis=1) - positives * (positives + 1) / 2
    valid = (positives > 0) & (negatives > 0)
    draws = u[valid] / (positives[valid] * negatives[valid])
    tail = 100 * (1 - level) / 2
    low, high = (
        (float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail)))
        if len(draws)
        else (float("nan"), float("nan"))
    )
    return safe_auc(labels, scores), low, high


def binary_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """The metrics of :data:`BINARY_METRICS` for 0/1 ``labels`` and positive-class
    ``probabilities``; a sample is predicted positive at ``probability >= threshold``."""
    labels = np.asarray(labels).astype(int)
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    return {
        "auc": safe_auc(labels, probabilities),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "balanced_accuracy": _ratio_mean(tp, tp + fn, tn, tn + fp),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0.0)),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "mcc": float(skm.matthews_corrcoef(labels, predicted)),
    }


def macro_auc(
    labels: np.ndarray, probabilities: np.ndarray, partial: bool = False
) -> tuple[float, np.ndarray]:
    """Macro ROC AUC of 0/1 ``labels`` ``(N, L)`` and probabilities ``(N, L)``, and the AUC of
    every label ``(L,)`` (NaN where a label holds one class, so its AUC is undefined).

    The macro value is scikit-learn's ``roc_auc_score(average="macro")``, the unweighted mean
    of the labels' AUCs. With a label undefined it is NaN, unless ``partial``: then the mean
    over the labels that hold both classes (NaN when none does), which is what a small
    validation part can give for model selection."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    per_label = np.array(
        [safe_auc(labels[:, k], probabilities[:, k]) for k in range(labels.shape[1])]
    )
    defined = np.isfinite(per_label)
    if not defined.any() or (not partial and not defined.all()):
        return float("nan"), per_label
    value = skm.roc_auc_score(labels[:, defined], probabilities[:, defined], average="macro")
    return float(value), per_label


def multilabel_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    names: Sequence[str],
    threshold: float = 0.5,
) -> dict[str, float]:
    """:data:`MULTILABEL_METRICS` and ``auc_<name>`` per label for 0/1 ``labels`` ``(N, L)``
    and per-label probabilities ``(N, L)`` (label ``k`` is ``names[k]``); a label is
    predicted present at ``probability >= threshold``.

    Subset accuracy counts a sample right only when all L labels are; mean accuracy is the
    share of right (sample, label) pairs; macro F1 and balanced accuracy as scikit-learn's
    (``f1_score(average="macro", zero_division=0)``, ``balanced_accuracy_score`` per label).
    A metric undefined for some label (AUC or balanced accuracy of a label with one class)
    makes its mean NaN, as ``roc_auc_score(average="macro")`` refuses it.

    Computed with numpy rather than one scikit-learn call per label because the bootstrap
    calls this thousands of times: each label's AUC is the Mann-Whitney statistic of the
    average ranks, which equals ``roc_auc_score`` (ties count one half); the tests check
    every value against scikit-learn."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, dtype=float)
    predicted = probabilities >= threshold
    positives = labels.sum(axis=0).astype(float)
    negatives = len(labels) - positives
    ranks = rankdata(probabilities, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        aucs = ((ranks * labels).sum(axis=0) - positives * (positives + 1) / 2) / (
            positives * negatives
        )
        aucs[(positives == 0) | (negatives == 0)] = np.nan
        tp = (predicted & labels).sum(axis=0)
        fp = (predicted & ~labels).sum(axis=0)
        fn = (~predicted & labels).sum(axis=0)
        tn = (~predicted & ~labels).sum(axis=0)
        f1 = np.where(tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        balanced = (tp / (tp + fn) + tn / (tn + fp)) / 2
    return {
        "macro_auc": float(np.mean(aucs)),
        "macro_f1": float(np.mean(f1)),
        "subset_accuracy": float(np.mean((predicted == labels).all(axis=1))),
        "mean_accuracy": float(np.mean(predicted == labels)),
        "mean_balanced_accuracy": float(np.mean(balanced)),
    } | {f"auc_{name}": float(value) for name, value in zip(names, aucs, strict=True)}


def label_columns(table: pd.DataFrame) -> list[str]:
    """The label names of a multi-label predictions table: its ``prob_<name>`` columns (each
    with its ``label_<name>``), in table order."""
    return [c.removeprefix("prob_") for c in table.columns if c.startswith("prob_")]


def multilabel_table_metrics(
    table: pd.DataFrame, names: Sequence[str], threshold: float = 0.5
) -> dict[str, float]:
    """:func:`multilabel_metrics` of a predictions table with ``label_<name>`` (0/1) and
    ``prob_<name>`` columns per label."""
    return multilabel_metrics(
        table[[f"label_{n}" for n in names]].to_numpy(),
        table[[f"prob_{n}" for n in names]].to_numpy(float),
        names,
        threshold,
    )


def _ratio_mean(a: int, b: int, c: int, d: int) -> float:
    """Mean of a/b and c/d, NaN when either is undefined (sklearn warns and returns 0)."""
    return float((a / b + c / d) / 2) if b and d else float("nan")


def _bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_intervals(
    labels: np.ndarray,
    probabilities: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    metric: Callable[[np.ndarray, np.ndarray], dict[str, float]] = binary_metrics,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of every metric: ``{name: (low, high)}``.

    Resamples where a metric is undefined (one class drawn) are left out of that metric's
    interval; a metric undefined in every resample gets (NaN, NaN).
    """
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    draws: dict[str, list[float]] = {}
    for index in _bootstrap_indices(len(labels), n_boot, seed):
        for name, value in metric(labels[index], probabilities[index]).items():
            draws.setdefault(name, []).append(value)
    return _percentile_intervals(draws, level)


def _percentile_intervals(
    draws: dict[str, list[float]], level: float
) -> dict[str, tuple[float, float]]:
    tail = 100 * (1 - level) / 2
    intervals = {}
    for name, values in draws.items():
        finite = np.asarray(values)[np.isfinite(values)]
        intervals[name] = (
            (float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail)))
            if len(finite)
            else (float("nan"), float("nan"))
        )
    return intervals


def bootstrap_table_intervals(
    table: pd.DataFrame,
    metric: Callable[[pd.DataFrame], dict[str, float]],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of every metric of ``metric(table)``, resampling rows
    (subjects); undefined values of a resample are left out, as in bootstrap_intervals."""
    draws: dict[str, list[float]] = {}
    for index in _bootstrap_indices(len(table), n_boot, seed):
        for name, value in metric(table.iloc[index]).items():
            draws.setdefault(name, []).append(value)
    return _percentile_intervals(draws, level)


def paired_table_comparison(
    paired: pd.DataFrame,
    metric: Callable[[pd.DataFrame], float],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """``metric`` of a method minus the reference's on the same subjects. ``paired`` holds
    one row per subject with the method's columns and the reference's with suffix ``_ref``;
    ``metric(frame)`` reads the unsuffixed columns. Returns the point difference, the paired
    bootstrap interval and two-sided p-value, as paired_auc_comparison."""
    reference = paired[[c for c in paired.columns if c.endswith("_ref")]]
    reference = reference.rename(columns=lambda c: c[: -len("_ref")])
    deltas = []
    for index in _bootstrap_indices(len(paired), n_boot, seed):
        delta = metric(paired.iloc[index]) - metric(reference.iloc[index])
        if np.isfinite(delta):
            deltas.append(delta)
    if not deltas:
        return {"delta": float("nan"), "low": float("nan"), "high": float("nan"), "p": float("nan")}
    deltas_array = np.asarray(deltas)
    tail = 100 * (1 - level) / 2
    p = min(1.0, 2 * min(np.mean(deltas_array <= 0), np.mean(deltas_array >= 0)))
    return {
        "delta": metric(paired) - metric(reference),
        "low": float(np.percentile(deltas_array, tail)),
        "high": float(np.percentile(deltas_array, 100 - tail)),
        "p": float(p),
    }


def paired_auc_comparison(
    labels: np.ndarray,
    scores: np.ndarray,
    reference_scores: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """AUC of ``scores`` minus AUC of ``reference_scores`` on the same samples: the point
    difference, its paired-bootstrap interval and two-sided p-value."""
    labels = np.asarray(labels)
    scores, reference_scores = np.asarray(scores), np.asarray(reference_scores)
    deltas = []
    for index in _bootstrap_indices(len(labels), n_boot, seed):
        delta = safe_auc(labels[index], scores[index]) - safe_auc(
            labels[index], reference_scores[index]
        )
        if np.isfinite(delta):
            deltas.append(delta)
    deltas = np.asarray(deltas)
    tail = 100 * (1 - level) / 2
    if not len(deltas):
        return {
            "delta_auc": float("nan"),
            "low": float("nan"),
            "high": float("nan"),
            "p": float("nan"),
        }
    p = min(1.0, 2 * min(np.mean(deltas <= 0), np.mean(deltas >= 0)))
    return {
        "delta_auc": safe_auc(labels, scores) - safe_auc(labels, reference_scores),
        "low": float(np.percentile(deltas, tail)),
        "high": float(np.percentile(deltas, 100 - tail)),
        "p": float(p),
    }
