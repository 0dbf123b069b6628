"""Figures of the HTML report: ROC curves, per-fold scores, parameters against AUC, QC
summaries. Each returns a PNG as bytes; colours from the Okabe-Ito palette, axes labelled
with units."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from neuroadapt.report.style import OKABE_ITO, plt

__all__ = ["fold_scores", "parameters_vs_auc", "png", "qc_distributions", "roc_curves"]


def png(figure: plt.Figure) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _colours(methods) -> dict[str, str]:
    return {m: OKABE_ITO[i % len(OKABE_ITO)] for i, m in enumerate(methods)}


def roc_curves(predictions: pd.DataFrame, metrics: pd.DataFrame, methods: list[str]) -> bytes:
    """Pooled out-of-fold ROC curve of every method, one panel per model selection."""
    selections = sorted(predictions.selection.unique())
    figure, axes = plt.subplots(1, len(selections), figsize=(5 * len(selections), 4.6))
    axes = np.atleast_1d(axes)
    colours = _colours(methods)
    for ax, selection in zip(axes, selections, strict=True):
        for method in methods:
            rows = predictions[
                (predictions.method == method) & (predictions.selection == selection)
            ]
            if rows.label.nunique() < 2:
                continue
            fpr, tpr, _ = roc_curve(rows.label, rows.probability)
            auc = metrics.set_index(["method", "selection"]).loc[(method, selection), "auc"]
            ax.plot(fpr, tpr, color=colours[method], lw=2, label=f"{method} (AUC {auc:.2f})")
        ax.plot([0, 1], [0, 1], color="#999999", ls="--", lw=1, label="chance")
        ax.set(
            xlabel="false positive rate (1 - specificity)",
            ylabel="true positive rate (sensitivity)",
            title=f"model selected by {selection.replace('best_', 'best validation ')}",
            xlim=(0, 1),
            ylim=(0, 1.01),
            aspect="equal",
        )
        ax.legend(loc="lower right", fontsize=8)
    return png(figure)


def fold_scores(folds: pd.DataFrame, methods: list[str], metric: str = "auc") -> bytes:
    """``metric`` of every fold (dots) and their mean (bar), per method and selection."""
    selections = sorted(folds.selection.unique())
    figure, ax = plt.subplots(figsize=(max(5, 1.3 * len(methods) * len(selections)), 4))
    width = 0.8 / len(selections)
    markers = ("o", "s", "^", "D")
    for j, selection in enumerate(selections):
        for i, method in enumerate(methods):
            values = folds[(folds.method == method) & (folds.selection == selection)][metric]
            x = i + (j - (len(selections) - 1) / 2) * width
            ax.bar(
                x,
                values.mean(),
                width * 0.9,
                color=OKABE_ITO[j],
                alpha=0.35,
                label=selection if i == 0 else None,
            )
            ax.scatter(
                np.full(len(values), x),
                values,
                color=OKABE_ITO[j],
                marker=markers[j % 4],
                zorder=3,
                s=22,
            )
    ax.axhline(0.5, color="#999999", ls="--", lw=1)
    ax.set_xticks(range(len(methods)), methods, rotation=20)
    ax.set(ylabel=f"test {metric.upper()} per fold", ylim=(0, 1.02), title="per-fold scores")
    ax.legend(title="selection", fontsize=8)
    return png(figure)


def parameters_vs_auc(metrics: pd.DataFrame, resources: pd.DataFrame, selection: str) -> bytes:
    """Trainable parameters (log scale) against pooled AUC with its 95% interval."""
    rows = metrics[metrics.selection == selection].merge(resources, on="method")
    colours = _colours(list(rows.method))
    figure, ax = plt.subplots(figsize=(6, 4.2))
    for _, row in rows.iterrows():
        ax.errorbar(
            row.trainable_parameters,
            row.auc,
            yerr=[[row.auc - row.auc_low], [row.auc_high - row.auc]],
            fmt="o",
            color=colours[row.method],
            capsize=3,
            label=row.method,
        )
    ax.set_xscale("log")
    ax.axhline(0.5, color="#999999", ls="--", lw=1)
    ax.set(
        xlabel="trainable parameters (log scale)",
        ylabel="pooled out-of-fold AUC (95% CI)",
        ylim=(0, 1.02),
        title=f"cost against benefit ({selection})",
    )
    ax.legend(fontsize=8)
    return png(figure)


def qc_distributions(table: pd.DataFrame, columns: dict[str, str], title: str) -> bytes:
    """One histogram per QC column (``{column: axis label with unit}``)."""
    figure, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3))
    for ax, (column, label), colour in zip(
        np.atleast_1d(axes), columns.items(), OKABE_ITO, strict=False
    ):
        ax.hist(pd.to_numeric(table[column], errors="coerce").dropna(), bins=15, color=colour)
        ax.set(xlabel=label, ylabel="subjects")
    figure.suptitle(title)
    return png(figure)
