"""The report's first section: per experiment, the methods ranked by the primary metric.

A reader opens the report to learn which method wins; this section answers that before the
details: each method's pooled primary metric with its 95% interval, the paired difference
from the reference with p, the recipe it trained with (the tuned values chosen on each
fold's validation part, or the fixed ``method_settings``), and its trainable share; then
a one-sentence verdict that says which methods differ from the reference, or that the
experiment is too small to tell them apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from neuroadapt.report.cells import comparison, interval

__all__ = ["PRIMARY", "recipe", "summary_section", "verdict"]

#: Task -> (metrics.tsv column, the selection it is read at, label).
PRIMARY = {
    "binary": ("auc", "best_auc", "AUC"),
    "multilabel": ("macro_auc", "best_auc", "macro AUC"),
    "segmentation+survival": ("c_index", "best_cindex", "C-index"),
}


def _format(name: str, value) -> str:
    return f"{name} {value:.2g}" if isinstance(value, float) else f"{name} {value}"


def recipe(runs: Sequence[Mapping]) -> str:
    """The learning rates (and rank) one method trained with, per fold in fold order:
    ``fold 1: lr_head 0.003; fold 2: ...`` when tuned, ``fixed: lr_head 0.003`` otherwise."""
    runs = sorted(runs, key=lambda r: r["fold"])
    if not any(r.get("tuning") for r in runs):
        settings = runs[0].get("method_settings", {}) if runs else {}
        fixed = {k: v for k, v in settings.items() if k == "r" or k == "lr" or k.startswith("lr_")}
        return "fixed: " + (", ".join(_format(k, v) for k, v in fixed.items()) or "defaults")
    parts = []
    for run in runs:
        chosen = (run.get("tuning") or {}).get("chosen", {})
        values = dict(chosen)
        rates = {k: v for k, v in values.items() if k != "r"}
        if len(set(rates.values())) == 1:  # shared learning rate: say it once
            values = {
                "lr": next(iter(rates.values())),
                **{k: v for k, v in values.items() if k == "r"},
            }
        parts.append(f"fold {run['fold']}: " + ", ".join(_format(k, v) for k, v in values.items()))
    return "; ".join(parts)


def verdict(chosen: pd.DataFrame, column: str, label: str, reference: str) -> str:
    """What the ranking supports, from the rows of one selection: the methods whose paired
    difference from ``reference`` has p < 0.05, or, when none has, that the experiment cannot
    rank the methods, with the number of test subjects and the median width of the metric's
    intervals (a reader then knows which differences the cohort could have shown)."""
    if "p_value" not in chosen or f"{column}_low" not in chosen:
        return ""
    compared = chosen[chosen.method != reference].dropna(subset=["p_value"])
    if compared.empty:
        return ""
    widths = (chosen[f"{column}_high"] - chosen[f"{column}_low"]).dropna()
    subjects = f"{int(chosen.n.max())} test subjects" if "n" in chosen else "these test subjects"
    spread = f"the median 95% interval of a method's {label} is {widths.median():.2f} wide"
    significant = compared[compared.p_value < 0.05]
    if significant.empty:
        return (
            f"No method differs from {reference} at p < 0.05: on {subjects} {spread}; this "
            "experiment does not rank them."
        )
    better = [
        m for m, d in zip(significant.method, significant[f"delta_{column}"], strict=True) if d > 0
    ]
    worse = [m for m in significant.method if m not in better]
    parts = []
    if better:
        parts.append(f"{', '.join(better)} above")
    if worse:
        parts.append(f"{', '.join(worse)} below")
    return (
        f"Differ from {reference} at p < 0.05: {' and '.join(parts)} it ({len(significant)} of "
        f"{len(compared)} comparisons, not corrected for their number; {subjects}, {spread})."
    )


def summary_section(
    name: str, experiment: Mapping, metrics: pd.DataFrame, resources: pd.DataFrame, runs
) -> dict:
    """Rows of one experiment's summary, best first: method, metric with interval, the
    difference from the reference with p, recipe, trainable percent."""
    column, selection, label = PRIMARY[experiment.get("task", "binary")]
    chosen = metrics[metrics.selection == selection].sort_values(column, ascending=False)
    share = dict(zip(resources.method, resources.trainable_percent, strict=True))
    rows = []
    for rank, (_, row) in enumerate(chosen.iterrows(), start=1):
        method_runs = [r for r in runs if r["method"] == row.method]
        rows.append(
            {
                "rank": rank,
                "method": row.method,
                "metric": interval(row, column),
                "trainable_percent": f"{share.get(row.method, float('nan')):.3g}",
                "recipe": recipe(method_runs),
            }
            | comparison(row, f"delta_{column}")
        )
    reference = str(chosen.reference.iloc[0]) if len(chosen) else ""
    return {
        "name": name,
        "metric": label,
        "selection": selection,
        "reference": reference,
        "rows": rows,
        "verdict": verdict(chosen, column, label, reference),
    }
