"""The ``attribution`` rule: every run's attribution scores and group maps of one experiment,
gathered into ``results/<experiment>/attribution.tsv`` and ``attribution_maps.npz``.

``attribution.tsv``: one row per method, fold (1..k, then ``pooled`` over the folds' test
parts), target and attribution: ``n`` (test samples whose planted region is not empty),
mean and median ``enrichment``, mean ``mass_share`` and ``region_share``, the pointing-game
``hit_rate`` and its chance ``hit_chance``, Grad-CAM's ``layer``. Pooled rows add the
experiment's score of the explained model (AUC, per label for multilabel; C-index for the
risk) with its bootstrap interval from ``metrics.tsv``, ``beats_chance`` (interval above 0.5)
and ``enriched_3x`` (mean enrichment at least 3, the goal for a method that beats chance).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from neuroadapt.errors import InputError
from neuroadapt.io import atomic_write_text

__all__ = ["GOAL_ENRICHMENT", "attribution_table", "group_maps"]

#: Mass in the planted region, as a multiple of chance, that a method beating chance should reach.
GOAL_ENRICHMENT = 3.0


def _read_scores(run: str | Path, method: str) -> pd.DataFrame:
    path = Path(run) / "scores.tsv"
    if not path.is_file():
        raise InputError(path, "is missing", "rerun that interpret job")
    table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
    return table.assign(method=method)


def _summarise(group: pd.DataFrame) -> dict:
    scored = group.dropna(subset=["region_share"])
    layers = sorted(set(group.layer.dropna().astype(str)) - {"n/a"})
    return {
        "n": int(len(scored)),
        "enrichment": float(scored.enrichment.mean()) if len(scored) else np.nan,
        "enrichment_median": float(scored.enrichment.median()) if len(scored) else np.nan,
        "mass_share": float(scored.mass_share.mean()) if len(scored) else np.nan,
        "region_share": float(scored.region_share.mean()) if len(scored) else np.nan,
        "hit_rate": float(scored.hit.mean()) if len(scored) else np.nan,
        "hit_chance": float(scored.hit_chance.mean()) if len(scored) else np.nan,
        "layer": ",".join(layers) or "n/a",
    }


def _score(metrics: pd.DataFrame, method: str, selection: str, target: str, task: str):
    """(score name, value, low, high) of ``method``'s explained model for ``target``."""
    rows = metrics[(metrics.method == method) & (metrics.selection == selection)]
    if rows.empty:
        return None
    row = rows.iloc[0]
    if task == "segmentation+survival":
        name = "c_index"
    elif task == "multilabel":
        name = f"auc_{target}"
    else:
        name = "auc"
    value = row.get(name, np.nan)
    low, high = row.get(f"{name}_low", np.nan), row.get(f"{name}_high", np.nan)
    return name, float(value), float(low), float(high)


def _selection(folder: str | Path) -> str:
    """The model selection an interpret folder explains (its ``interpret.json``)."""
    path = Path(folder) / "interpret.json"
    try:
        return str(json.loads(path.read_text())["selection"])
    except (OSError, ValueError, KeyError):
        raise InputError(path, "is missing or unreadable", "rerun that interpret job") from None


def attribution_table(
    runs: Mapping[str, Sequence[str | Path]], metrics: str | Path, task: str
) -> pd.DataFrame:
    """The table above from each method's interpret folders (``runs``: method -> folders)
    and the experiment's ``metrics.tsv`` (the scores of the model selection they explain)."""
    selection = _selection(next(iter(runs.values()))[0])
    scores = pd.concat(
        [_read_scores(run, method) for method, folders in runs.items() for run in folders],
        ignore_index=True,
    )
    table = pd.read_csv(metrics, sep="\t", na_values="n/a", keep_default_na=False)
    keys = ["method", "target", "attribution"]
    rows = []
    for (method, target, attribution), group in scores.groupby(keys, sort=False):
        for fold, part in group.groupby("fold", sort=True):
            rows.append(
                {"method": method, "fold": str(int(fold)), "target": target}
                | {"attribution": attribution}
                | _summarise(part)
            )
        pooled = {"method": method, "fold": "pooled", "target": target}
        pooled |= {"attribution": attribution} | _summarise(group)
        score = _score(table, method, selection, target, task)
        if score is not None:
            name, value, low, high = score
            pooled |= {"score": name, "score_value": value, "score_low": low, "score_high": high}
            pooled["beats_chance"] = bool(low > 0.5) if np.isfinite(low) else False
        pooled["enriched_3x"] = bool(pooled["enrichment"] >= GOAL_ENRICHMENT)
        rows.append(pooled)
    columns = [
        "method",
        "fold",
        "target",
        "attribution",
        "n",
        "enrichment",
        "enrichment_median",
        "mass_share",
        "region_share",
        "hit_rate",
        "hit_chance",
        "layer",
        "score",
        "score_value",
        "score_low",
        "score_high",
        "beats_chance",
        "enriched_3x",
    ]
    return pd.DataFrame(rows).reindex(columns=columns)


def group_maps(runs: Mapping[str, Sequence[str | Path]]) -> dict[str, np.ndarray]:
    """Means over every fold's test samples, on the model-ready grid: per method, target,
    attribution and class the unit-mass maps (``<method>/<target>/<attribution>/<class>``);
    per target and class the first image channel (``image/<target>/<class>``, FA or CT); per
    target how often each voxel lies in a sample's planted region (``region/<target>``)."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, float] = {}
    for method, folders in runs.items():
        for folder in folders:
            path = Path(folder) / "group_maps.npz"
            if not path.is_file():
                raise InputError(path, "is missing", "rerun that interpret job")
            with np.load(path) as saved:
                for key in saved.files:
                    if key.startswith("n/"):
                        continue
                    kind, rest = key.split("/", 1)
                    # images and regions are the same samples for every method: pooled
                    name = f"{method}/{rest}" if kind == "map" else key
                    sums[name] = sums.get(name, 0) + saved[key]
                    counts[name] = counts.get(name, 0) + float(saved[f"n/{key}"])
    return {name: (sums[name] / counts[name]).astype(np.float32) for name in sums}


def write_attribution_outputs(
    runs: Mapping[str, Sequence[str | Path]],
    metrics: str | Path,
    task: str,
    table_path: str | Path,
    maps_path: str | Path,
) -> pd.DataFrame:
    """:func:`attribution_table` to ``table_path`` and :func:`group_maps` to ``maps_path``
    (each written under a temporary name, then moved into place)."""
    table = attribution_table(runs, metrics, task)
    maps = group_maps(runs)
    atomic_write_text(
        table_path, table.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n")
    )
    maps_path = Path(maps_path)
    partial = maps_path.with_name(f".{maps_path.name}.partial.npz")
    np.savez_compressed(partial, **maps)
    partial.replace(maps_path)
    return table
