"""QC figure of one CT/PET subject: PET over CT before and after registration, and the
crop box the model-ready tensors come from.

Everything is shown on one display grid (RAS axes, the box's spacing, twice the box's
extent, centred on the box centre), so the three views of every subject look the same
whatever the source orientations, and the box is an exact rectangle on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from neuroadapt.petct import resample
from neuroadapt.petct.images import to_array

# Display windows: soft tissue for CT (HU) and the PET overlay from 0 SUV.
CT_WINDOW_HU = (-200.0, 300.0)
VIEWS = (("axial", 2), ("coronal", 1), ("sagittal", 0))


def display_grid(centre_ras: np.ndarray, crop: resample.CropSettings) -> sitk.Image:
    """RAS grid at the box spacing, twice the box extent, centred on the box centre."""
    size = [2 * int(n) for n in crop.box_voxels]
    return resample.box_grid(centre_ras, crop.spacing_mm, size)


def _slice(volume: np.ndarray, axis: int) -> np.ndarray:
    """The middle slice across ``axis`` of an (X, Y, Z) array, transposed for imshow
    (rows: the second remaining axis, so superior/anterior is up with origin='lower')."""
    index = [slice(None)] * 3
    index[axis] = volume.shape[axis] // 2
    return volume[tuple(index)].T


def registration_figure(
    ct: sitk.Image,
    pet_suv: sitk.Image,
    pet_to_ct_itk: sitk.Transform,
    centre_ras: np.ndarray,
    crop: resample.CropSettings,
    path: str | Path,
) -> None:
    """Write a 3x3 PNG: rows PET (SUV) over CT before registration (scanner positions),
    after registration, and the CT with the crop box; columns axial, coronal, sagittal
    through the box centre."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from neuroadapt.report.style import OKABE_ITO, save_figure

    grid = display_grid(centre_ras, crop)
    ct_view = to_array(resample.resample(ct, grid, default=resample.CT_AIR_HU))
    before = to_array(resample.resample(pet_suv, grid))
    after = to_array(resample.resample(pet_suv, grid, pet_to_ct_itk))
    suv_max = max(float(np.percentile(after, 99.9)), 1e-6)
    size = np.asarray(crop.box_voxels)
    low = size / 2.0 - 0.5  # box corner on the display grid (voxel edges)

    figure, axes = plt.subplots(3, 3, figsize=(8.4, 8.4))
    rows = (("before registration", before), ("after registration", after), ("crop box", None))
    overlay = None
    for row, (label, pet) in enumerate(rows):
        for column, (view, axis) in enumerate(VIEWS):
            ax = axes[row, column]
            ax.imshow(
                _slice(ct_view, axis),
                origin="lower",
                cmap="gray",
                vmin=CT_WINDOW_HU[0],
                vmax=CT_WINDOW_HU[1],
                interpolation="nearest",
            )
            if pet is not None:
                shown = np.ma.masked_less(_slice(pet, axis), 0.05 * suv_max)
                overlay = ax.imshow(
                    shown,
                    origin="lower",
                    cmap="inferno",
                    vmin=0,
                    vmax=suv_max,
                    alpha=0.6,
                    interpolation="nearest",
                )
            else:
                x, y = [k for k in range(3) if k != axis]
                ax.add_patch(
                    Rectangle(
                        (low[x], low[y]),
                        size[x],
                        size[y],
                        fill=False,
                        edgecolor=OKABE_ITO[2],
                        linewidth=1.5,
                    )
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(view, fontsize=9)
            if column == 0:
                ax.set_ylabel(label, fontsize=9)
    if overlay is not None:
        bar = figure.colorbar(overlay, ax=list(axes[:2].ravel()), fraction=0.025, pad=0.02)
        bar.set_label("PET (SUV, body weight)")
    extent = size * crop.spacing_mm
    figure.suptitle(
        f"CT (HU {CT_WINDOW_HU[0]:g} to {CT_WINDOW_HU[1]:g}) with PET; box "
        f"{extent[0]:g} x {extent[1]:g} x {extent[2]:g} mm ({crop.centre} centre)",
        fontsize=9,
    )
    save_figure(figure, path)
