"""b0 reference and brain mask (dipy ``median_otsu``)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation

from neuroadapt.dwi.settings import MaskSettings


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
