"""b0 reference and brain mask (dipy ``median_otsu``)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy.ndimage import binary_dilation

from neuroadapt.dwi.settings import MaskSettings
from neuroadapt.errors import InputError


def b0_reference(data: np.ndarray, b0_mask: np.ndarray) -> np.ndarray:
    """Mean of the b=0 volumes (X, Y, Z)."""
    return data[..., b0_mask].mean(axis=-1).astype(np.float32)


def brain_mask(b0: np.ndarray, settings: MaskSettings) -> np.ndarray:
    """Boolean brain mask of a b0 image by median filtering + Otsu thresholding."""
    from dipy.segment.mask import median_otsu

    _, mask = median_otsu(b0, median_radius=settings.median_radius, numpass=settings.numpass)
    return mask.astype(bool)


def head_mask(b0: np.ndarray, settings: MaskSettings, dilation: int = 2) -> np.ndarray:
    """The brain mask dilated by ``dilation`` voxels: where denoising and registration work."""
    return binary_dilation(brain_mask(b0, settings), iterations=dilation)


def conform_mask(path: str, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """A mask file made upstream (e.g. QSIPrep's), reoriented to RAS like the series it
    belongs to; InputError naming the file when it is not on that series' grid."""
    image = nib.as_closest_canonical(nib.load(path))
    if image.shape[:3] != tuple(shape) or not np.allclose(image.affine, affine, atol=1e-3):
        raise InputError(
            path,
            f"is not on the grid of its DWI series (shape {image.shape[:3]} vs {tuple(shape)}, "
            "or a different affine)",
            "give the brain mask written with this preprocessed series (same space, e.g. "
            "space-T1w for both)",
        )
    return np.asarray(image.dataobj) > 0
