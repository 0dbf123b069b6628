"""Figures of the HTML report: ROC curves, per-fold scores, parameters against a score, QC
summaries, and for segmentation+survival Kaplan-Meier curves by predicted risk and example
segmentations. Each returns a PNG as bytes; colours from the Okabe-Ito palette, axes labelled
with units."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from neuroadapt.report.style import OKABE_ITO, plt

__all__ = [
    "RISK_GROUP_STYLES",
    "data_uri",
    "fold_scores",
    "kaplan_meier",
    "parameters_vs_auc",
    "parameters_vs_metric",
    "per_label_auc",
    "png",
    "qc_distributions",
    "roc_curves",
    "segmentation_examples",
]

#: Kaplan-Meier groups: colour and line style (twice distinguishable, also in grey print).
RISK_GROUP_STYLES = {
    "low": {"color": OKABE_ITO[0], "ls": "-", "label": "low predicted risk"},
    "high": {"color": OKABE_ITO[5], "ls": "--", "label": "high predicted risk"},
}
#: The true GTV contour: yellow, which no method gets among the first five palette colours.
TRUTH_COLOUR = "#F0E442"


def png(figure: plt.Figure) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def data_uri(content: bytes, mime: str = "image/png") -> str:
    """``content`` inline, for an ``<img src>`` of a self-contained page."""
    return f"data:{mime};base64,{base64.b64encode(content).decode()}"


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


def missing_modality_curves(table: pd.DataFrame, methods: list[str], selection: str) -> bytes:
    """AUC (bootstrap 95% band) against the share of test subjects missing a modality, one
    panel per modality, one line per method (``missing_modality.tsv``, one selection)."""
    rows = table[table.selection == selection]
    modalities = list(dict.fromkeys(rows.modality))
    figure, axes = plt.subplots(
        1, len(modalities), figsize=(4.2 * len(modalities), 3.8), sharey=True, squeeze=False
    )
    colours = _colours(methods)
    for ax, modality in zip(axes[0], modalities, strict=True):
        for method in methods:
            line = rows[(rows.method == method) & (rows.modality == modality)]
            if line.empty:
                continue
            line = line.sort_values("fraction")
            ax.plot(line.fraction, line.auc, marker="o", color=colours[method], lw=2, label=method)
            ax.fill_between(
                line.fraction, line.auc_low, line.auc_high, color=colours[method], alpha=0.12
            )
        ax.axhline(0.5, color="#999999", ls="--", lw=1)
        ax.set(
            title=f"{modality} removed",
            xlabel="share of test subjects without it",
            ylim=(0.3, 1.02),
            xticks=sorted(rows.fraction.unique()),
        )
    axes[0][0].set_ylabel("pooled AUC")
    axes[0][-1].legend(loc="lower left", fontsize=8)
    return png(figure)


def fold_scores(
    folds: pd.DataFrame,
    methods: list[str],
    metric: str = "auc",
    label: str | None = None,
    chance: float | None = 0.5,
    ylim: tuple[float, float] | None = (0, 1.02),
) -> bytes:
    """``metric`` of every fold (dots) and their mean (bar), per method and selection.

    ``label``: the y axis (default ``test <METRIC> per fold``); ``chance``: a dashed
    reference line (None: none, e.g. for Dice or a distance); ``ylim``: None to fit the data
    (a distance in mm has no upper bound)."""
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
    if chance is not None:
        ax.axhline(chance, color="#999999", ls="--", lw=1)
    ax.set_xticks(range(len(methods)), methods, rotation=20)
    ax.set(ylabel=label or f"test {metric.upper()} per fold", title="per-fold scores")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(title="selection", fontsize=8)
    return png(figure)


def parameters_vs_auc(metrics: pd.DataFrame, resources: pd.DataFrame, selection: str) -> bytes:
    """Trainable parameters (log scale) against pooled AUC with its 95% interval."""
    return parameters_vs_metric(
        metrics, resources, [(selection, "auc", "pooled out-of-fold AUC (95% CI)", 0.5)]
    )


def parameters_vs_metric(
    metrics: pd.DataFrame,
    resources: pd.DataFrame,
    panels: Sequence[tuple[str, str, str, float | None]],
) -> bytes:
    """Trainable parameters (log scale) against pooled scores with their 95% intervals.

    One panel per ``(selection, metric, y label, chance level or None)``; ``metrics`` has
    ``metric``, ``metric_low`` and ``metric_high`` per method and selection. Scores in
    [0, 1] (AUC, C-index, Dice) get that range; others (a distance) fit their data."""
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (selection, metric, label, chance) in zip(axes[0], panels, strict=True):
        rows = metrics[metrics.selection == selection].merge(resources, on="method")
        colours = _colours(list(rows.method))
        for _, row in rows.iterrows():
            ax.errorbar(
                row.trainable_parameters,
                row[metric],
                yerr=[
                    [row[metric] - row[f"{metric}_low"]],
                    [row[f"{metric}_high"] - row[metric]],
                ],
                fmt="o",
                color=colours[row.method],
                capsize=3,
                label=row.method,
            )
        ax.set_xscale("log")
        if chance is not None:
            ax.axhline(chance, color="#999999", ls="--", lw=1)
        ax.set(
            xlabel="trainable parameters (log scale)",
            ylabel=label,
            title=f"cost against benefit ({selection})",
        )
        if metric in ("auc", "c_index", "dice", "macro_auc"):
            ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    return png(figure)


#: How a multi-label figure names the model selections.
SELECTION_NAMES = {
    "best_auc": "best validation macro AUC",
    "best_acc": "best validation mean per-label accuracy",
}


def per_label_auc(
    metrics: pd.DataFrame, methods: Sequence[str], labels: Sequence[str], selection: str
) -> bytes:
    """Pooled out-of-fold AUC of every label (groups) and method (bars) with 95% bootstrap
    intervals, for the models of ``selection``; ``metrics`` has ``auc_<label>`` and its
    ``_low``/``_high`` per method and selection (a multilabel metrics.tsv)."""
    rows = metrics[metrics.selection == selection].set_index("method")
    present = [m for m in methods if m in rows.index]
    colours = _colours(methods)
    figure, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(labels) * max(1, len(present))), 4))
    width = 0.8 / max(1, len(present))
    for i, method in enumerate(present):
        row = rows.loc[method]
        x = np.arange(len(labels)) + (i - (len(present) - 1) / 2) * width
        values = np.array([row[f"auc_{label}"] for label in labels], dtype=float)
        low = np.array([row[f"auc_{label}_low"] for label in labels], dtype=float)
        high = np.array([row[f"auc_{label}_high"] for label in labels], dtype=float)
        ax.bar(x, values, width * 0.9, color=colours[method], label=method)
        ax.errorbar(
            x,
            values,
            yerr=[np.nan_to_num(values - low), np.nan_to_num(high - values)],
            fmt="none",
            ecolor="#333333",
            capsize=3,
            lw=1,
        )
    ax.axhline(0.5, color="#999999", ls="--", lw=1)
    ax.set_xticks(range(len(labels)), [label.replace("_", " ") for label in labels], rotation=15)
    ax.set(
        ylabel="pooled out-of-fold AUC (95% CI)",
        ylim=(0, 1.02),
        title="AUC per label (models selected by "
        + SELECTION_NAMES.get(selection, selection)
        + ")",
    )
    ax.legend(fontsize=8, loc="lower right")
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


def _at_risk_times(ax: plt.Axes) -> list[float]:
    """The x ticks within the axis: where the numbers at risk are counted."""
    low, high = ax.get_xlim()
    return [float(t) for t in ax.get_xticks() if low <= t <= high]


def kaplan_meier(
    frame: pd.DataFrame, methods: Sequence[str], p_values: Mapping[str, float | None]
) -> bytes:
    """Kaplan-Meier survival by predicted-risk group, one panel per method.

    ``frame``: one row per subject with ``method``, ``time`` (months), ``event`` (0/1) and
    ``group`` (``low``/``high``, from :mod:`neuroadapt.report.segsurv`); ``p_values``: the
    log-rank p per method (None: not computable). Curves are scikit-survival's estimator with
    log-log 95% bands; ticks mark censored subjects; the numbers at risk are printed under
    each panel at its x ticks."""
    from sksurv.nonparametric import kaplan_meier_estimator

    figure, axes = plt.subplots(
        1, len(methods), figsize=(4.8 * len(methods), 4.4), squeeze=False, sharey=True
    )
    horizon = float(frame.time.max()) if len(frame) else 1.0
    for ax, method in zip(axes[0], methods, strict=True):
        rows = frame[frame.method == method]
        for group, style in RISK_GROUP_STYLES.items():
            part = rows[rows.group == group]
            if part.empty:
                continue
            event = part.event.to_numpy().astype(bool)
            time = part.time.to_numpy(dtype=float)
            times, survival, band = kaplan_meier_estimator(event, time, conf_type="log-log")
            # the curve starts at 1 at time 0; the band is undefined there, so it starts at 1
            x = np.concatenate([[0.0], times])
            ax.step(
                x,
                np.concatenate([[1.0], survival]),
                where="post",
                color=style["color"],
                ls=style["ls"],
                lw=2,
                label=f"{style['label']} (n={len(part)}, {int(event.sum())} events)",
            )
            ax.fill_between(
                x,
                np.concatenate([[1.0], band[0]]),
                np.concatenate([[1.0], band[1]]),
                step="post",
                color=style["color"],
                alpha=0.12,
                lw=0,
            )
            censored = time[~event]
            at = np.searchsorted(times, censored, side="right") - 1
            ax.plot(censored, survival[at], "|", color=style["color"], ms=8, mew=1.5)
        p = p_values.get(method)
        p_text = f"log-rank p = {p:.3g}" if p is not None else "log-rank p not computable"
        ax.set(
            xlim=(0, horizon * 1.02),
            ylim=(0, 1.03),
            xlabel="time (months)",
            title=f"{method}\n{p_text}",
        )
        ax.legend(loc="lower left", fontsize=7)
        # numbers at risk under the axis: x in data units, y in axes fractions
        transform = ax.get_xaxis_transform()
        for k, (group, style) in enumerate(RISK_GROUP_STYLES.items()):
            times_ = rows.time[rows.group == group].to_numpy(dtype=float)
            y = -0.25 - 0.08 * k
            ax.text(
                -0.08,  # left of the tick at time 0, whose count is centred on it
                y,
                group,
                transform=ax.transAxes,
                ha="right",
                va="center",
                fontsize=7,
                color=style["color"],
            )
            for t in _at_risk_times(ax):
                ax.text(
                    t,
                    y,
                    str(int((times_ >= t).sum())),
                    transform=transform,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color=style["color"],
                )
        ax.text(-0.08, -0.17, "at risk", transform=ax.transAxes, ha="right", fontsize=7)
    axes[0][0].set_ylabel("survival probability")
    return png(figure)


def _contour(ax: plt.Axes, mask: np.ndarray, colour: str, ls: str, lw: float) -> None:
    # a constant slice has no 0.5 level: skip it rather than let matplotlib warn
    if mask.any() and not mask.all():
        ax.contour(
            mask.T.astype(float), levels=[0.5], colors=[colour], linestyles=ls, linewidths=lw
        )


def _scale_bar(ax: plt.Axes, spacing_mm: float, width: int, length_mm: float = 20) -> None:
    """A ``length_mm`` bar in the lower left (voxels of ``spacing_mm``), black-edged white."""
    voxels = length_mm / spacing_mm
    if voxels > 0.6 * width:  # a small box: a shorter bar
        length_mm = max(1.0, round(0.4 * width * spacing_mm))
        voxels = length_mm / spacing_mm
    x, y = 0.05 * width, 0.06 * width
    ax.plot([x, x + voxels], [y, y], color="white", lw=3, solid_capstyle="butt")
    ax.text(x, y + 0.03 * width, f"{length_mm:g} mm", color="white", fontsize=7, va="bottom")


def segmentation_examples(examples: Sequence[Mapping], methods: Sequence[str]) -> bytes:
    """Axial CT and PET slices with the true GTV contour and every method's prediction.

    ``examples``: ``title``, ``ct`` and ``pet`` (2-D ``(X, Y)`` in [0, 1]), ``truth`` and
    ``predictions`` {method: 2-D mask or None when it is missing}, optionally ``spacing_mm``
    (a scale bar). The box is RAS-ordered, so
    transposed with the origin below the patient's right is on the right and anterior up."""
    colours = _colours(methods)
    styles = dict(zip(methods, ("-", "--", ":", "-."), strict=False))
    figure, axes = plt.subplots(
        len(examples), 2, figsize=(7.2, 3.5 * len(examples) + 0.6), squeeze=False
    )
    for row, example in zip(axes, examples, strict=True):
        for ax, channel, cmap in ((row[0], "ct", "gray"), (row[1], "pet", "gray_r")):
            ax.imshow(example[channel].T, cmap=cmap, origin="lower", vmin=0, vmax=1)
            _contour(ax, example["truth"], TRUTH_COLOUR, "-", 2.4)
            for method in methods:
                mask = example["predictions"].get(method)
                if mask is not None:
                    _contour(ax, mask, colours[method], styles.get(method, "-"), 1.6)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{example['title']}: {channel.upper()}", fontsize=9)
            if example.get("spacing_mm"):
                _scale_bar(ax, example["spacing_mm"], example[channel].shape[0])
    handles = [plt.Line2D([], [], color=TRUTH_COLOUR, lw=2.4, label="true GTV")]
    missing = {m for e in examples for m in methods if e["predictions"].get(m) is None}
    handles += [
        plt.Line2D(
            [],
            [],
            color=colours[m],
            ls=styles.get(m, "-"),
            lw=1.6,
            label=m + (" (missing for some)" if m in missing else ""),
        )
        for m in methods
    ]
    figure.legend(
        handles=handles,
        loc="lower center",
        ncol=len(handles),
        fontsize=8,
        bbox_to_anchor=(0.5, 0.0),
        facecolor="#d9d9d9",  # grey, so the yellow truth line stands out in the legend too
    )
    figure.tight_layout(rect=(0, 0.5 / figure.get_figheight(), 1, 1))
    return png(figure)
