"""Model-ready FA/MD: cropped to the brain, resampled to a fixed shape, normalised."""

from __future__ import annotations

import numpy as np

from neuroadapt.dwi.settings import ModelReadySettings

CHANNELS = ("fa", "md")


def brain_box(mask: np.ndarray, affine: np.ndarray, shape, margin_mm: float) -> np.ndarray:
    """Affine (RAS) of a grid of ``shape`` voxels covering the mask's bounding box plus
    ``margin_mm``, with isotropic spacing (the longest side fits, so anatomy keeps its
    proportions) and centred on the box."""
    ijk = np.argwhere(mask)
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    low, high = ijk.min(axis=0) - 0.5, ijk.max(axis=0) + 0.5
    points = low + corners * (high - low)
    world = points @ affine[:3, :3].T + affine[:3, 3]
    lo, hi = world.min(axis=0) - margin_mm, world.max(axis=0) + margin_mm
    spacing = float(np.max((hi - lo) / np.asarray(shape)))
    box = np.diag([spacing, spacing, spacing, 1.0])
    centre = (lo + hi) / 2
    box[:3, 3] = centre - spacing * (np.asarray(shape) - 1) / 2
    return box


def model_ready(
    fa: np.ndarray,
    md: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    settings: ModelReadySettings,
    box_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(2, X, Y, Z) float16 array (FA in [0, 1]; MD / md_scale clipped to [0, 1]; zero
    outside the brain) on the brain box, and the box's affine. Linear resampling with
    dipy's ``AffineMap``.

    ``box_mask``: the mask (same grid) whose bounding box the box covers, instead of
    ``mask``: in a template space, the template's brain mask, so every subject gets the
    same box."""
    from dipy.align.imaffine import AffineMap

    shape = tuple(int(v) for v in settings.shape)
    box = brain_box(mask if box_mask is None else box_mask, affine, shape, settings.margin_mm)
    mapping = AffineMap(
        np.eye(4),
        domain_grid_shape=shape,
        domain_grid2world=box,
        codomain_grid_shape=mask.shape,
        codomain_grid2world=affine,
    )
    channels = [
        np.clip(fa * mask, 0.0, 1.0),
        np.clip(md * mask / settings.md_scale, 0.0, 1.0),
    ]
    resampled = [mapping.transform(c.astype(np.float64), interpolation="linear") for c in channels]
    return np.stack(resampled).astype(np.float16), box
