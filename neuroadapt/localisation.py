"""How well an attribution map finds a known region: mass enrichment and the pointing game.

* ``mass_share``: the share of the map's total mass (over the whole grid, so mass put
  outside the brain counts against it) that lies inside the region;
* ``region_share``: the region's share of the brain's voxels, the mass share of a map
  spread evenly over the brain (chance);
* ``enrichment`` = mass_share / region_share: 1 is chance, 3 is three times chance;
* ``hit`` (pointing game, Zhang et al. 2016): whether the map's maximum lies in the region
  grown by ``tolerance`` voxels (the original game allows 15 pixels; one voxel of the
  model-ready grid is 4-6 mm on the demo), with ``hit_chance`` that grown region's share of
  the brain.

Regions and maps are on the same grid; :func:`to_grid` brings a mask or map from one grid
to another (nibabel's resampling, world coordinates from the affines).
"""

from __future__ import annotations

import numpy as np

__all__ = ["localisation_scores", "planted_mask_name", "to_grid"]


def planted_mask_name(prefix: str, target: str) -> str:
    """The ground-truth file (in a demo dataset's ground-truth folder) of where ``target``'s
    planted effect acts in session ``prefix``: on its DWI grid, at the reference pose; empty
    where the subject does not carry it (written by :mod:`neuroadapt.demo.dwi`)."""
    return f"{prefix}_planted-{target}_mask.nii.gz"


def localisation_scores(
    attribution: np.ndarray, region: np.ndarray, brain: np.ndarray, tolerance: int = 1
) -> dict[str, float]:
    """The scores above for a map ``attribution`` ``(X, Y, Z)`` >= 0 and boolean ``region``
    and ``brain`` masks of the same shape. NaN where undefined (empty region or brain, or a
    map of zero mass)."""
    from scipy.ndimage import binary_dilation

    if attribution.shape != region.shape or region.shape != brain.shape:
        raise ValueError(
            f"map {attribution.shape}, region {region.shape} and brain {brain.shape} differ"
        )
    region, brain = region.astype(bool), brain.astype(bool)
    total = float(attribution.sum())
    brain_voxels = int(brain.sum())
    nan = float("nan")
    if not region.any() or brain_voxels == 0:
        return dict.fromkeys(("mass_share", "region_share", "enrichment", "hit", "hit_chance"), nan)
    region_share = float((region & brain).sum()) / brain_voxels
    grown = binary_dilation(region, structure=np.ones((3, 3, 3)), iterations=tolerance)
    hit_chance = float((grown & brain).sum()) / brain_voxels
    if total <= 0:
        return {
            "mass_share": nan,
            "region_share": region_share,
            "enrichment": nan,
            "hit": nan,
            "hit_chance": hit_chance,
        }
    mass_share = float(attribution[region].sum()) / total
    peak = np.unravel_index(int(np.argmax(attribution)), attribution.shape)
    return {
        "mass_share": mass_share,
        "region_share": region_share,
        "enrichment": mass_share / region_share if region_share > 0 else nan,
        "hit": float(grown[peak]),
        "hit_chance": hit_chance,
    }


def to_grid(
    volume: np.ndarray,
    affine: np.ndarray,
    shape: tuple[int, ...],
    target_affine: np.ndarray,
    order: int = 1,
) -> np.ndarray:
    """``volume`` (on the grid of ``affine``) resampled onto the grid ``shape`` /
    ``target_affine`` (voxel -> world mm); ``order`` 0 for masks, 1 (linear) for maps;
    zero outside the source grid."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    image = nib.Nifti1Image(np.asarray(volume, dtype=np.float32), np.asarray(affine, float))
    moved = resample_from_to(image, (tuple(shape), np.asarray(target_affine, float)), order=order)
    return np.asarray(moved.dataobj, dtype=np.float32)
