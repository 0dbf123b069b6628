"""Denoising (MP-PCA: dipy's, batched in :mod:`neuroadapt.dwi.mppca`; patch2self: dipy) and
Gibbs unringing (dipy)."""

from __future__ import annotations

import numpy as np

from neuroadapt.dwi.settings import DenoiseSettings

METHODS = ("mppca", "patch2self", "none")


def denoise(
    data: np.ndarray, bvals: np.ndarray, settings: DenoiseSettings, mask: np.ndarray | None = None
) -> tuple[np.ndarray, float | None]:
    """Denoised (X, Y, Z, N) series and the median noise sigma (MP-PCA only, signal units).

    MP-PCA runs inside ``mask`` when given (a dilated head mask: the background holds no
    signal to restore and skipping it makes the step several times faster); voxels outside
    keep their values."""
    if settings.method == "none":
        return data, None
    if settings.method == "mppca":
        from neuroadapt.dwi.mppca import mppca  # dipy's mppca, batched (1.2-3x faster)

        denoised, sigma = mppca(data, mask=mask, patch_radius=settings.patch_radius)
        denoised = np.nan_to_num(denoised, nan=0.0)
        if mask is not None:
            denoised[~mask] = data[~mask]
            noise = float(np.median(sigma[mask])) if mask.any() else None
        else:
            noise = float(np.median(sigma))
        return denoised.astype(np.float32), noise
    if settings.method == "patch2self":
        from dipy.denoise.patch2self import patch2self

        denoised = patch2self(
            data, bvals, model="ols", shift_intensity=True, clip_negative_vals=False, verbose=False
        )
        return np.asarray(denoised, dtype=np.float32), None
    raise ValueError(f"unknown denoising method {settings.method!r} (use one of {METHODS})")


def unring(data: np.ndarray, slice_axis: int = 2) -> np.ndarray:
    """Gibbs unringing (Kellner et al. 2016, dipy ``gibbs_removal``) in-plane, one process
    (dipy's multiprocessing needs a ``__main__`` guard; subjects run in parallel instead)."""
    from dipy.denoise.gibbs import gibbs_removal

    return np.asarray(
        gibbs_removal(data, slice_axis=slice_axis, inplace=False, num_processes=1),
        dtype=np.float32,
    )
