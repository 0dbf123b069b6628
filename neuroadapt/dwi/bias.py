"""B1 bias-field correction of a DWI series (N4, Tustison et al. 2010, SimpleITK), as
QSIPrep's ``--b1-biascorrect-stage``: the field is estimated once on the mean b0 inside the
head mask and every volume is divided by it (a multiplicative field leaves the tensor fit
unchanged; it matters for masking, registration and intensity QC)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def n4_field(b0: np.ndarray, mask: np.ndarray, spacing, shrink_factor: int = 2) -> np.ndarray:
    """Smooth multiplicative bias field (X, Y, Z), mean 1 inside ``mask``, of a b0 image.

    N4 runs on the image shrunk by ``shrink_factor`` (as ANTs' N4 default -s 2 does) and the
    field is evaluated at full resolution from its B-spline log-field."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(b0.T, dtype=np.float32))
    image.SetSpacing([float(s) for s in spacing])
    mask_image = sitk.GetImageFromArray(np.ascontiguousarray(mask.T, dtype=np.uint8))
    mask_image.CopyInformation(image)
    small = sitk.Shrink(image, [shrink_factor] * 3)
    small_mask = sitk.Shrink(mask_image, [shrink_factor] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([50, 50, 30])
    corrector.Execute(small, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    field = np.exp(sitk.GetArrayFromImage(log_field).T.astype(np.float64))
    field /= field[mask].mean() if mask.any() else 1.0
    return field.astype(np.float32)


def correct(data: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Every volume of ``data`` (X, Y, Z, N) divided by ``field`` (X, Y, Z)."""
    return (data / np.maximum(field, 1e-3)[..., None]).astype(np.float32)
