"""The results of a segmentation and/or survival experiment (paper 5: CT/PET, GTV + risk).

:func:`segsurv_section` reads what training and evaluation of such an experiment wrote
(``results/<experiment>/{metrics,folds,predictions,resources}.tsv``, the run folders'
``segmentations-<selection>.npz`` and the model-ready CT/PET tensors and GTV masks of the
dataset) and returns what ``templates/report.html`` shows: the metrics table (C-index, Dice,
HD95 with bootstrap intervals, fold mean ± sd, ΔC-index against the reference), per-fold
scores, trainable parameters against C-index and Dice, Kaplan-Meier curves by predicted risk
with the log-rank test, and example segmentations.

Choices the captions state:

* Kaplan-Meier: the models selected by validation C-index (``best_cindex``); a subject is
  *high risk* when its predicted risk is above the median of the test subjects of **its own
  fold** (same method), else *low risk*. Each fold has its own model, and a Cox risk is
  defined only up to an additive constant (the partial likelihood ignores a shift), so risks
  of different folds are not on one scale: a pooled median could put a whole fold in one
  group. The groups are then pooled over folds and compared by the log-rank test
  (scikit-survival's ``compare_survival``).
* Examples: the models selected by validation Dice (``best_dice``); the test subjects with the
  best, median and worst Dice of the first configured method, each shown with every method's
  prediction, on the axial slice with the largest true GTV area.

What a partial run lacks (a run folder's segmentations, a tensor, a method's predictions) is
listed in the section's ``notes`` and the rest is still shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from neuroadapt.report import figures
from neuroadapt.report.cells import comparison, interval
from neuroadapt.report.figures import data_uri
from neuroadapt.subjects import row_folder, row_prefix

__all__ = [
    "EXAMPLE_SELECTION",
    "KM_SELECTION",
    "example_subjects",
    "is_segmentation_survival",
    "logrank_p",
    "risk_groups",
    "segsurv_section",
]

KM_SELECTION = "best_cindex"
EXAMPLE_SELECTION = "best_dice"
#: metrics.tsv column -> (table heading, decimals of the value, decimals of its interval)
METRICS = {
    "c_index": ("C-index", 3, 2),
    "dice": ("Dice", 3, 2),
    "hd95_mm": ("HD95 (mm)", 1, 1),
}
SURVIVAL_METRICS = ("c_index",)
SEGMENTATION_METRICS = ("dice", "hd95_mm")
TENSOR = "{prefix}_space-box_desc-ctpet_tensor.npy"
MASK = "{prefix}_space-box_label-GTV_mask.npy"


def is_segmentation_survival(experiment: Mapping) -> bool:
    """Whether the experiment's ``task`` segments and/or predicts survival (its results are
    then C-index / Dice / HD95, not classification scores)."""
    task = str(experiment.get("task", "binary"))
    return "segmentation" in task or "survival" in task


def risk_groups(predictions: pd.DataFrame) -> pd.Series:
    """``high`` where ``risk`` is above the median risk of the same method, selection and
    fold, else ``low`` (a risk equal to the median is ``low``)."""
    median = predictions.groupby(["method", "selection", "fold"]).risk.transform("median")
    return pd.Series(
        np.where(predictions.risk > median, "high", "low"), index=predictions.index, name="group"
    )


def logrank_p(time: np.ndarray, event: np.ndarray, group: np.ndarray) -> float | None:
    """Log-rank p-value of the survival of the groups; None with fewer than two groups or no
    event (the test has nothing to compare)."""
    from sksurv.compare import compare_survival
    from sksurv.util import Surv

    event = np.asarray(event).astype(bool)
    if len(set(np.asarray(group))) < 2 or not event.any():
        return None
    outcome = Surv.from_arrays(event=event, time=np.asarray(time, dtype=float))
    _, p = compare_survival(outcome, np.asarray(group))
    return float(p)


def example_subjects(
    predictions: pd.DataFrame, method: str, selection: str = EXAMPLE_SELECTION
) -> list[tuple[str, pd.Series]]:
    """The test subjects with the best, median and worst Dice of ``method``:
    ``[(label, prediction row)]``, each subject once (fewer with fewer subjects)."""
    rows = predictions[(predictions.method == method) & (predictions.selection == selection)]
    rows = rows.dropna(subset=["dice"]).sort_values(
        ["dice", "participant_id"], ascending=[False, True]
    )
    picks: list[tuple[str, pd.Series]] = []
    seen: set[int] = set()
    for label, position in (("best", 0), ("median", (len(rows) - 1) // 2), ("worst", -1)):
        if len(rows) and (index := rows.index[position]) not in seen:
            seen.add(index)
            picks.append((label, rows.loc[index]))
    return picks


def metrics_table(metrics: pd.DataFrame, columns: list[str]) -> list[dict]:
    """The rows of the metrics table, formatted (value [95% CI], fold mean ± sd, Δ, p)."""
    table = []
    for _, row in metrics.iterrows():
        entry = {"method": row.method, "selection": row.selection, "n": int(row.n)}
        for metric in columns:
            _, digits, ci_digits = METRICS[metric]
            entry[metric] = interval(row, metric, digits, ci_digits)
            mean, sd = row.get(f"{metric}_fold_mean"), row.get(f"{metric}_fold_sd")
            entry[f"{metric}_folds"] = (
                f"{mean:.{digits}f} ± {sd:.{digits}f}" if pd.notna(mean) and pd.notna(sd) else ""
            )
        entry |= comparison(row, "delta_c_index")
        table.append(entry)
    return table


def kaplan_meier_section(predictions: pd.DataFrame, methods: list[str]) -> tuple[dict, list[str]]:
    """The Kaplan-Meier figure and log-rank table of the ``best_cindex`` models, and notes on
    methods without such predictions."""
    rows = predictions[predictions.selection == KM_SELECTION].copy()
    rows["group"] = risk_groups(rows)
    notes, table, p_values = [], [], {}
    shown = [m for m in methods if (rows.method == m).any()]
    for method in methods:
        if method not in shown:
            notes.append(f"{method}: no {KM_SELECTION} predictions, so no Kaplan-Meier curve")
            continue
        part = rows[rows.method == method]
        p = logrank_p(part.time.to_numpy(), part.event.to_numpy(), part.group.to_numpy())
        p_values[method] = p
        entry = {"method": method, "p": "not computable" if p is None else f"{p:.3g}"}
        entry["significant"] = p is not None and p < 0.05
        for group in ("low", "high"):
            members = part[part.group == group]
            entry[f"n_{group}"] = len(members)
            entry[f"events_{group}"] = int(members.event.sum())
        table.append(entry)
    if not shown:
        return {}, notes
    uri = figures.kaplan_meier(rows[["method", "time", "event", "group"]], shown, p_values)
    return {"figure": uri, "table": table, "selection": KM_SELECTION}, notes


class _Segmentations:
    """The ``segmentations-<selection>.npz`` of the run folders, each opened once."""

    def __init__(self, runs_root: Path) -> None:
        self.runs_root = runs_root
        self._open: dict[Path, Mapping | None] = {}

    def path(self, method: str, fold: int, selection: str) -> Path:
        return self.runs_root / method / f"fold-{fold}" / f"segmentations-{selection}.npz"

    def mask(
        self, method: str, fold: int, selection: str, prefix: str
    ) -> tuple[np.ndarray | None, str | None]:
        """The predicted mask of ``prefix``, or None and why not."""
        path = self.path(method, fold, selection)
        if path not in self._open:
            self._open[path] = dict(np.load(path, allow_pickle=False)) if path.is_file() else None
        arrays = self._open[path]
        if arrays is None:
            return None, f"{method}: segmentations of fold {fold} ({selection}) missing: {path}"
        if prefix not in arrays:
            return None, f"{method}: {path} has no mask of {prefix}"
        return arrays[prefix] > 0, None


def _slice_through(truth: np.ndarray) -> int:
    """The axial index (last axis) with the largest true GTV area (the middle if empty)."""
    areas = truth.sum(axis=(0, 1))
    return int(areas.argmax()) if areas.any() else truth.shape[2] // 2


def examples_section(
    predictions: pd.DataFrame, methods: list[str], runs_root: Path, derivatives: Path
) -> tuple[dict, list[str]]:
    """Example segmentations (``best_dice`` models): the figure, a table of the subjects with
    every method's Dice, and notes on what could not be shown."""
    chosen_by = next(
        (m for m in methods if ((predictions.method == m) & predictions.dice.notna()).any()), None
    )
    if chosen_by is None:
        return {}, [f"no {EXAMPLE_SELECTION} predictions with a Dice, so no example segmentations"]
    segmentations = _Segmentations(runs_root)
    examples, rows, notes = [], [], []
    selected = predictions[predictions.selection == EXAMPLE_SELECTION]
    # the same subject in every method's predictions, by its row prefix (with the session)
    prefixes = pd.Series(
        [
            row_prefix(p, s)
            for p, s in zip(selected.participant_id, selected.session_id, strict=True)
        ],
        index=selected.index,
    )
    for label, pick in example_subjects(predictions, chosen_by):
        prefix = row_prefix(pick.participant_id, pick.session_id)
        folder = derivatives / row_folder(pick.participant_id, pick.session_id) / "tensors"
        tensor_path = folder / TENSOR.format(prefix=prefix)
        mask_path = folder / MASK.format(prefix=prefix)
        absent = [str(p) for p in (tensor_path, mask_path) if not p.is_file()]
        if absent:
            notes.append(f"example {prefix}: model-ready input missing: {', '.join(absent)}")
            continue
        tensor = np.load(tensor_path, allow_pickle=False).astype(np.float32)
        truth = np.load(mask_path, allow_pickle=False) > 0
        z = _slice_through(truth)
        predicted, dice = {}, {}
        for method in methods:
            own = selected[(selected.method == method) & (prefixes == prefix)]
            if own.empty:
                notes.append(f"{method}: no {EXAMPLE_SELECTION} prediction of {prefix}")
                predicted[method] = None
                continue
            dice[method] = own.dice.iloc[0]
            mask, why = segmentations.mask(method, int(own.fold.iloc[0]), EXAMPLE_SELECTION, prefix)
            if mask is not None and mask.shape != truth.shape:
                why = f"{method}: mask of {prefix} has shape {mask.shape}, the input {truth.shape}"
                mask = None
            if why:
                notes.append(why)
            predicted[method] = None if mask is None else mask[:, :, z]
        examples.append(
            {
                "title": f"{prefix} ({label})",
                "ct": tensor[0, :, :, z],
                "pet": tensor[1, :, :, z],
                "truth": truth[:, :, z],
                "predictions": predicted,
                "spacing_mm": spacing_mm(tensor_path),
            }
        )
        rows.append(
            {
                "subject": prefix,
                "label": label,
                "slice": z,
                "dice": {m: ("" if pd.isna(d) else f"{d:.3f}") for m, d in dice.items()},
            }
        )
    if not examples:
        return {}, notes
    return {
        "figure": figures.segmentation_examples(examples, methods),
        "table": rows,
        "chosen_by": chosen_by,
        "selection": EXAMPLE_SELECTION,
    }, notes


def segsurv_section(name: str, experiment: Mapping, paths: Mapping, runs: list[dict]) -> dict:
    """Everything the report shows of one segmentation/survival experiment.

    ``paths``: ``metrics``, ``folds``, ``predictions``, ``resources`` (TSV files); optional
    ``runs_root`` (default: the metrics file's folder, where ``<method>/fold-<k>/`` lie) and
    ``derivatives`` (default: ``<results>/<dataset>/derivatives/neuroadapt``, ``<results>``
    being the experiment folder's parent); ``runs``: the runs' run.json contents."""
    metrics_path = Path(paths["metrics"])
    runs_root = Path(paths.get("runs_root", metrics_path.parent))
    derivatives = Path(
        paths.get(
            "derivatives",
            metrics_path.parent.parent / experiment["dataset"] / "derivatives" / "neuroadapt",
        )
    )
    task = str(experiment.get("task", ""))
    metrics = pd.read_csv(metrics_path, sep="\t")
    wanted = (SURVIVAL_METRICS if "survival" in task else ()) + (
        SEGMENTATION_METRICS if "segmentation" in task else ()
    )
    columns = [m for m in wanted if m in metrics.columns]
    methods = list(experiment["methods"])
    notes = [
        f"{m}: not in metrics.tsv (not trained or evaluated)"
        for m in methods
        if m not in set(metrics.method)
    ]
    present = [m for m in methods if m in set(metrics.method)]
    tables = {}
    for key in ("folds", "predictions", "resources"):
        path = Path(paths[key])
        if path.is_file():
            tables[key] = pd.read_csv(path, sep="\t")
        else:
            notes.append(f"{key}.tsv missing: {path}")
    section: dict = {
        "name": name,
        "kind": "segsurv",
        "task": task,
        "reference": str(metrics.reference.iloc[0]) if "reference" in metrics else "",
        "columns": [{"key": m, "label": METRICS[m][0]} for m in columns],
        "survival": "c_index" in columns,
        "table": metrics_table(metrics, columns),
        "resources": [],
        "folds": [],
        "cost": None,
        "km": {},
        "examples": {},
    }
    descriptions = {r["method"]: r.get("method_description", "").replace("``", "") for r in runs}
    if "resources" in tables:
        section["resources"] = [
            r | {"description": descriptions.get(r["method"], "")}
            for r in tables["resources"].round(4).to_dict("records")
        ]
        panels = [
            (selection, metric, f"pooled out-of-fold {METRICS[metric][0]} (95% CI)", chance)
            for selection, metric, chance in (
                (KM_SELECTION, "c_index", 0.5),
                (EXAMPLE_SELECTION, "dice", None),
            )
            if metric in columns and (metrics.selection == selection).any()
        ]
        if panels:
            section["cost"] = data_uri(
                figures.parameters_vs_metric(metrics, tables["resources"], panels)
            )
    if "folds" in tables:
        for metric in columns:
            if metric not in tables["folds"].columns:
                continue
            label, *_ = METRICS[metric]
            bounded = metric != "hd95_mm"  # a distance has no upper bound nor chance level
            uri = figures.fold_scores(
                tables["folds"],
                present,
                metric,
                label=f"test {label} per fold",
                chance=0.5 if metric == "c_index" else None,
                ylim=(0, 1.02) if bounded else None,
            )
            section["folds"].append({"metric": metric, "label": label, "figure": data_uri(uri)})
    if "predictions" in tables:
        predictions = tables["predictions"]
        if "survival" in task:
            km, more = kaplan_meier_section(predictions, present)
            notes += more
            if km:
                section["km"] = km | {"figure": data_uri(km["figure"])}
        if "segmentation" in task:
            examples, more = examples_section(predictions, present, runs_root, derivatives)
            notes += more
            if examples:
                section["examples"] = examples | {"figure": data_uri(examples["figure"])}
    section["notes"] = notes
    return section


def spacing_mm(tensor: Path) -> float | None:
    """The voxel size (mm) from a tensor's JSON sidecar, if it gives one."""
    try:
        return float(json.loads(tensor.with_suffix(".json").read_text())["SpacingMM"])
    except (OSError, ValueError, KeyError):
        return None
