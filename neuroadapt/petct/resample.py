"""Resampling in physical space: PET onto the CT grid, and CT, PET and GTV onto a common
isotropic box around the region of interest, plus intensity normalisation.

Every resampling goes from the original image straight to its target grid (one
interpolation), through the registration transform where the PET is concerned. The box has
RAS-ordered axes, so the tensors of every subject share one orientation whatever the
source grids were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.petct.images import RAS_TO_LPS, ras_affine

CT_AIR_HU = -1024.0
CROP_CENTRES = ("gtv", "body")


@dataclass(frozen=True)
class CropSettings:
    """The common grid: ``spacing_mm`` (isotropic, mm), ``box_voxels`` (X, Y, Z) centred on
    the GTV's centre of mass (``centre: gtv``) or on the CT body's (``centre: body``, HU
    above ``body_hu``); CT HU clipped to ``ct_hu_window`` and PET SUV to ``pet_suv_window``,
    each mapped linearly onto [0, 1]."""

    spacing_mm: float = 2.0
    box_voxels: tuple[int, int, int] = (64, 64, 64)
    centre: str = "gtv"
    body_hu: float = -500.0
    ct_hu_window: tuple[float, float] = (-200.0, 250.0)
    pet_suv_window: tuple[float, float] = (0.0, 20.0)

    def check(self, where: str) -> None:
        if self.centre not in CROP_CENTRES:
            raise ConfigError(f"{where}.centre", f"unknown '{self.centre}'", "use gtv or body")
        if not self.spacing_mm > 0:
            raise ConfigError(f"{where}.spacing_mm", "must be positive", "use e.g. 2.0")
        if len(self.box_voxels) != 3 or min(self.box_voxels) < 8:
            raise ConfigError(f"{where}.box_voxels", "needs 3 sizes >= 8", "use [64, 64, 64]")
        for name in ("ct_hu_window", "pet_suv_window"):
            low, high = getattr(self, name)
            if not low < high:
                raise ConfigError(f"{where}.{name}", "needs low < high", "e.g. [-200, 250]")


def box_grid(centre_ras: np.ndarray, spacing_mm: float, size) -> sitk.Image:
    """Empty float32 image: ``size`` voxels of ``spacing_mm``, RAS axes, centred on the
    world point ``centre_ras`` (mm)."""
    grid = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    grid.SetSpacing([float(spacing_mm)] * 3)
    grid.SetDirection(tuple(RAS_TO_LPS[:3, :3].ravel()))
    half = (np.asarray(size, float) - 1.0) / 2.0 * spacing_mm
    grid.SetOrigin(tuple(RAS_TO_LPS[:3, :3] @ (np.asarray(centre_ras, float) - half)))
    return grid


def centre_of_mass_ras(mask: sitk.Image) -> np.ndarray | None:
    """World (RAS mm) centre of the non-zero voxels of ``mask``; None when it is empty."""
    index = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1]  # (x, y, z)
    if len(index) == 0:
        return None
    return (ras_affine(mask) @ np.r_[index.mean(axis=0), 1.0])[:3]


def crop_centre(ct: sitk.Image, gtv: sitk.Image | None, settings: CropSettings, gtv_path=None):
    """World point (RAS mm) the box is centred on; InputError when the GTV is required but
    absent or empty."""
    if settings.centre == "gtv":
        centre = None if gtv is None else centre_of_mass_ras(gtv)
        if centre is None:
            raise InputError(
                gtv_path,
                "is missing or empty, and the crop box is centred on the GTV",
                "provide a non-empty GTV mask, or set petct.crop.centre: body",
            )
        return centre
    centre = centre_of_mass_ras(sitk.Cast(ct > settings.body_hu, sitk.sitkUInt8))
    if centre is None:
        raise InputError(None, "the CT has no voxel above the body threshold", "check the CT")
    return centre


def resample(
    image: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform | None = None,
    *,
    nearest: bool = False,
    default: float = 0.0,
) -> sitk.Image:
    """``image`` on the grid of ``reference``; ``transform`` maps reference physical points
    to ``image`` physical points (identity when None). Linear (or nearest-neighbour)
    interpolation; ``default`` outside ``image``."""
    transform = transform or sitk.Transform(3, sitk.sitkIdentity)
    method = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, reference, transform, method, float(default), image.GetPixelID())


def window(image: sitk.Image, low: float, high: float) -> np.ndarray:
    """Voxels (X, Y, Z) clipped to [low, high] and mapped linearly onto [0, 1], float32."""
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return ((np.clip(array, low, high) - low) / (high - low)).astype(np.float32)
