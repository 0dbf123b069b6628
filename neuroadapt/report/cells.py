"""Formatted cells of the report's metrics tables, shared by every task's section."""

from __future__ import annotations

import pandas as pd


def interval(row: pd.Series, metric: str, digits: int = 3, ci_digits: int = 2) -> str:
    """``value [low, high]`` of ``metric`` and its ``_low``/``_high`` columns; ``n/a`` when
    the value is missing or undefined."""
    if metric not in row or pd.isna(row[metric]):
        return "n/a"
    return (
        f"{row[metric]:.{digits}f} "
        f"[{row[f'{metric}_low']:.{ci_digits}f}, {row[f'{metric}_high']:.{ci_digits}f}]"
    )


def comparison(row: pd.Series, delta: str) -> dict:
    """The paired comparison against the reference: ``delta`` (``+d [low, high]`` of the
    ``delta`` column), ``p`` and ``significant`` (p < 0.05); empty for the reference itself."""
    if "p_value" not in row or pd.isna(row.p_value):
        return {}
    return {
        "delta": f"{row[delta]:+.3f} [{row[f'{delta}_low']:+.2f}, {row[f'{delta}_high']:+.2f}]",
        "p": f"{row.p_value:.3f}",
        "significant": bool(row.p_value < 0.05),
    }
