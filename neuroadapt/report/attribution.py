"""The report's attribution section: where each method's model looks, against the truth.

Per experiment: the pooled localisation table of ``attribution.tsv`` and, per explained
target, a figure of the group attribution maps (``attribution_maps.npz``) of the positive
class, one row per method and one column per attribution, over the mean FA (CT) of the same
subjects, with the planted region's outline where the demo knows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from neuroadapt.report.figures import data_uri, png
from neuroadapt.report.style import plt

__all__ = ["attribution_section", "group_map_figure"]

LABELS = {
    "integrated_gradients": "integrated gradients",
    "grad_cam": "Grad-CAM",
    "occlusion": "occlusion",
}


def _slice(maps: list[np.ndarray], region: np.ndarray | None) -> int:
    """The axial slice shown: through the planted region's largest cross-section, else the
    slice holding most of the maps' mass."""
    if region is not None and region.any():
        return int(np.argmax((region >= 0.5).sum(axis=(0, 1))))
    return int(np.argmax(sum(m.sum(axis=(0, 1)) for m in maps)))


def group_map_figure(
    maps: Mapping[str, np.ndarray], methods: list[str], attributions: list[str], target: str
) -> tuple[bytes, int]:
    """PNG of the group maps ``<method>/<target>/<attribution>/1`` and the axial slice shown."""
    image = maps.get(f"image/{target}/1")
    region = maps.get(f"region/{target}")
    shown = {
        (m, a): maps[f"{m}/{target}/{a}/1"]
        for m in methods
        for a in attributions
        if f"{m}/{target}/{a}/1" in maps
    }
    z = _slice(list(shown.values()), region)
    figure, axes = plt.subplots(
        len(methods),
        len(attributions),
        figsize=(2.2 * len(attributions), 2.2 * len(methods)),
        squeeze=False,
    )
    for row, method in enumerate(methods):
        for column, attribution in enumerate(attributions):
            ax = axes[row, column]
            ax.set_xticks([])
            ax.set_yticks([])
            if image is not None:
                ax.imshow(image[:, :, z].T, cmap="gray", origin="lower", vmin=0, vmax=1)
            values = shown.get((method, attribution))
            if values is not None and values.max() > 0:
                layer = values[:, :, z].T / values.max()
                ax.imshow(
                    np.ma.masked_less(layer, 0.05),
                    cmap="inferno",
                    origin="lower",
                    vmin=0,
                    vmax=1,
                    alpha=0.75,
                )
            if region is not None:
                ax.contour(region[:, :, z].T, levels=[0.5], colors="#56B4E9", linewidths=1)
            if row == 0:
                ax.set_title(LABELS.get(attribution, attribution), fontsize=9)
            if column == 0:
                ax.set_ylabel(method, fontsize=9)
    figure.tight_layout()
    return png(figure), z


def _cell(value, digits: int = 2) -> str:
    return "n/a" if pd.isna(value) else f"{value:.{digits}f}"


def attribution_section(name: str, paths: Mapping) -> dict | None:
    """The section's table rows and figures, or None when the experiment was not interpreted."""
    if "attribution" not in paths or not Path(paths["attribution"]).is_file():
        return None
    table = pd.read_csv(paths["attribution"], sep="\t", na_values="n/a", keep_default_na=False)
    pooled = table[table.fold.astype(str) == "pooled"]
    methods = list(dict.fromkeys(pooled.method))
    attributions = list(dict.fromkeys(pooled.attribution))
    with np.load(paths["attribution_maps"]) as saved:
        maps = {key: saved[key] for key in saved.files}
    rows = []
    for _, r in pooled.iterrows():
        score = (
            f"{r.score} {_cell(r.score_value)} [{_cell(r.score_low)}, {_cell(r.score_high)}]"
            if isinstance(r.get("score"), str)
            else "n/a"
        )
        rows.append(
            {
                "method": r.method,
                "target": r.target,
                "attribution": LABELS.get(r.attribution, r.attribution),
                "n": int(r.n),
                "enrichment": f"{_cell(r.enrichment)} ({_cell(r.enrichment_median)})",
                "mass_share": _cell(r.mass_share, 3),
                "region_share": _cell(r.region_share, 3),
                "hit_rate": f"{_cell(r.hit_rate)} ({_cell(r.hit_chance)})",
                "score": score,
                "beats_chance": str(r.beats_chance) == "True",
                "enriched_3x": str(r.enriched_3x) == "True",
                "layer": r.layer,
            }
        )
    figures = []
    for target in dict.fromkeys(pooled.target):
        content, z = group_map_figure(maps, methods, attributions, target)
        figures.append({"target": target, "figure": data_uri(content), "slice": z})
    return {"name": name, "rows": rows, "figures": figures, "scored": bool(pooled.n.sum())}
