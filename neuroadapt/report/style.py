"""Shared figure style: a colour-blind-safe palette (Okabe & Ito 2008) and deterministic PNGs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
ROLE_COLOURS = {"train": "#0072B2", "validation": "#E69F00", "test": "#009E73"}
# Classes get the rest of the palette, so they are never confused with roles.
CLASS_COLOURS = ("#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000", "#999999")


def save_figure(figure: plt.Figure, path: str | Path) -> None:
    """PNG without a software/version stamp, so identical figures are identical files."""
    figure.savefig(path, dpi=110, metadata={"Software": None}, bbox_inches="tight")
    plt.close(figure)
