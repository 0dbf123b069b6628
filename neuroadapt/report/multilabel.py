"""The results of a multi-label experiment (paper 3: several findings per scan, macro AUC).

:func:`multilabel_section` reads what training and evaluation of such an experiment wrote
(``results/<experiment>/{metrics,folds,predictions,resources}.tsv``) and returns what
``templates/report.html`` shows: the metrics table (macro AUC, macro F1, subset accuracy,
mean per-label accuracy and balanced accuracy, each with its bootstrap 95% interval; macro
AUC per fold as mean ± sd; ΔmacroAUC and p against the reference by paired bootstrap), the
per-label AUC table with intervals and the positives of every label, a per-label AUC figure
(models selected by validation macro AUC), the per-fold macro AUC and trainable parameters
against macro AUC.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from neuroadapt.metrics import label_columns
from neuroadapt.report import figures
from neuroadapt.report.cells import comparison, interval
from neuroadapt.report.figures import data_uri

__all__ = ["FIGURE_SELECTION", "METRICS", "is_multilabel", "multilabel_section"]

#: The models the per-label figure and the cost figure show.
FIGURE_SELECTION = "best_auc"
#: metrics.tsv column -> table heading.
METRICS = {
    "macro_auc": "macro AUC",
    "macro_f1": "macro F1",
    "subset_accuracy": "subset accuracy",
    "mean_accuracy": "mean per-label accuracy",
    "mean_balanced_accuracy": "mean per-label balanced accuracy",
}


def is_multilabel(experiment: Mapping) -> bool:
    """Whether the experiment's ``task`` is multi-label classification."""
    return experiment.get("task") == "multilabel"


def metrics_table(metrics: pd.DataFrame) -> list[dict]:
    """Rows of the metrics table, formatted: value [95% CI], fold mean ± sd, Δ and p."""
    table = []
    for _, row in metrics.iterrows():
        entry = {"method": row.method, "selection": row.selection, "n": int(row.n)}
        entry |= {metric: interval(row, metric) for metric in METRICS}
        mean, sd = row.get("macro_auc_fold_mean"), row.get("macro_auc_fold_sd")
        entry["fold_auc"] = f"{mean:.3f} ± {sd:.3f}" if pd.notna(mean) and pd.notna(sd) else ""
        entry |= comparison(row, "delta_macro_auc")
        table.append(entry)
    return table


def label_table(metrics: pd.DataFrame, labels: list[str]) -> list[dict]:
    """Per method and selection: every label's AUC [95% CI]."""
    return [
        {
            "method": row.method,
            "selection": row.selection,
            "aucs": [interval(row, f"auc_{label}") for label in labels],
        }
        for _, row in metrics.iterrows()
    ]


def positives(predictions: pd.DataFrame, labels: list[str]) -> list[str]:
    """``positives / subjects`` of every label among the out-of-fold test subjects."""
    subjects = predictions.drop_duplicates(["participant_id", "session_id"])
    return [f"{int(subjects[f'label_{label}'].sum())} / {len(subjects)}" for label in labels]


def multilabel_section(name: str, experiment: Mapping, paths: Mapping, runs: list[dict]) -> dict:
    """Everything the report shows of one multi-label experiment. ``paths``: ``metrics``,
    ``folds``, ``predictions``, ``resources`` (TSV files); ``runs``: the runs' run.json."""
    metrics = pd.read_csv(paths["metrics"], sep="\t")
    folds = pd.read_csv(paths["folds"], sep="\t")
    predictions = pd.read_csv(paths["predictions"], sep="\t", dtype={"session_id": str})
    resources = pd.read_csv(paths["resources"], sep="\t")
    methods = [m for m in experiment["methods"] if m in set(metrics.method)]
    labels = label_columns(predictions)
    descriptions = {r["method"]: r.get("method_description", "").replace("``", "") for r in runs}
    selection = (
        FIGURE_SELECTION
        if (metrics.selection == FIGURE_SELECTION).any()
        else str(metrics.selection.iloc[0])
    )
    return {
        "name": name,
        "kind": "multilabel",
        "reference": str(metrics.reference.iloc[0]),
        "columns": [{"key": key, "label": label} for key, label in METRICS.items()],
        "table": metrics_table(metrics),
        "labels": labels,
        "positives": positives(predictions, labels),
        "label_table": label_table(metrics, labels),
        "selection": selection,
        "resources": [
            r | {"description": descriptions.get(r["method"], "")}
            for r in resources.round(4).to_dict("records")
        ],
        "per_label": data_uri(figures.per_label_auc(metrics, methods, labels, selection)),
        "folds": data_uri(
            figures.fold_scores(folds, methods, "macro_auc", label="test macro AUC per fold")
        ),
        "cost": data_uri(
            figures.parameters_vs_metric(
                metrics,
                resources,
                [(selection, "macro_auc", "pooled out-of-fold macro AUC (95% CI)", 0.5)],
            )
        ),
    }
