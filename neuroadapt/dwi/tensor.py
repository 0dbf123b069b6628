"""Diffusion tensor fit (dipy) on the low shell and the scalar maps TractoFlow writes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuroadapt.dwi.settings import TensorSettings
from neuroadapt.errors import InputError

FIT_METHODS = ("WLS", "OLS", "NLLS")


@dataclass(frozen=True)
class TensorMaps:
    """FA (unitless, [0, 1]); MD, AD, RD in mm^2/s; colour FA (X, Y, Z, 3) in [0, 1]
    (|principal eigenvector| x FA, RGB = voxel axes of the RAS series)."""

    fa: np.ndarray
    md: np.ndarray
    ad: np.ndarray
    rd: np.ndarray
    rgb: np.ndarray
    nonphysical: int  # voxels in the mask with a negative eigenvalue or FA outside [0, 1]
    volumes_used: np.ndarray  # indices of the volumes the fit used


#: A tensor has six unknowns: fewer diffusion-weighted volumes cannot determine it.
MIN_WEIGHTED_VOLUMES = 6


def shell_volumes(
    bvals: np.ndarray, max_bval: float, b0_threshold: float = 50.0, source=None
) -> np.ndarray:
    """Indices of volumes with b <= ``max_bval`` (b=0 included). Too few diffusion-weighted
    volumes among them (a single b=2500 shell with the default 1200, say) is an error: the
    fit would otherwise return FA 0 everywhere."""
    keep = np.flatnonzero(bvals <= max_bval)
    weighted = int((bvals[keep] > b0_threshold).sum())
    if weighted < MIN_WEIGHTED_VOLUMES:
        shells = sorted({int(round(b, -2)) for b in bvals[bvals > b0_threshold]})
        example = shells[0] + 100 if shells else 1200
        raise InputError(
            source,
            f"has {weighted} diffusion-weighted volume(s) with b <= {max_bval:g} for the tensor "
            f"fit (needs {MIN_WEIGHTED_VOLUMES}); its shells: {shells or 'none'} s/mm^2",
            f"set dwi.tensor.max_bval to include a shell (e.g. {example}), or use a series "
            "with at least 6 diffusion directions",
        )
    return keep


def fit_tensor(
    data: np.ndarray,
    bvals: np.ndarray,
    bvecs_voxel: np.ndarray,
    mask: np.ndarray,
    settings: TensorSettings,
    b0_threshold: float = 50.0,
) -> TensorMaps:
    """Fit a tensor in every mask voxel on the b <= ``settings.max_bval`` volumes.

    FA is clipped to [0, 1] and non-finite values set to 0; voxels with a negative
    eigenvalue (non-physical, usually noise or CSF partial volume) are counted."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel, color_fa, fractional_anisotropy

    keep = shell_volumes(bvals, settings.max_bval, b0_threshold)
    gtab = gradient_table(bvals[keep], bvecs=bvecs_voxel[keep], b0_threshold=b0_threshold)
    fit = TensorModel(gtab, fit_method=settings.fit_method).fit(data[..., keep], mask=mask)
    evals = np.nan_to_num(fit.evals)
    raw_fa = fractional_anisotropy(evals)
    nonphysical = mask & (
        (evals < 0).any(axis=-1) | ~np.isfinite(raw_fa) | (raw_fa > 1) | (raw_fa < 0)
    )
    fa = np.clip(np.nan_to_num(raw_fa), 0.0, 1.0) * mask
    md = evals.mean(axis=-1) * mask
    ad = evals[..., 0] * mask
    rd = evals[..., 1:].mean(axis=-1) * mask
    rgb = np.clip(np.nan_to_num(color_fa(fa, np.nan_to_num(fit.evecs))), 0.0, 1.0)
    return TensorMaps(
        fa.astype(np.float32),
        md.astype(np.float32),
        ad.astype(np.float32),
        rd.astype(np.float32),
        rgb.astype(np.float32),
        int(nonphysical.sum()),
        keep,
    )


def maps_from_mrtrix(raw: dict[str, np.ndarray], mask: np.ndarray, keep: np.ndarray) -> TensorMaps:
    """TensorMaps from :func:`neuroadapt.dwi.mrtrix.fit_tensor`'s outputs, with the same
    clipping, masking and non-physical count as the dipy fit (eigenvalues of MRtrix3's
    tensor image)."""
    from neuroadapt.dwi.mrtrix import eigenvalues

    evals = eigenvalues(raw["tensor"])
    raw_fa = raw["fa"]
    nonphysical = mask & (
        (evals < 0).any(axis=-1) | ~np.isfinite(raw_fa) | (raw_fa > 1) | (raw_fa < 0)
    )
    fa = np.clip(np.nan_to_num(raw_fa), 0.0, 1.0) * mask
    rgb = np.clip(np.abs(raw["evec"]) * fa[..., None], 0.0, 1.0)
    return TensorMaps(
        fa.astype(np.float32),
        (raw["md"] * mask).astype(np.float32),
        (raw["ad"] * mask).astype(np.float32),
        (raw["rd"] * mask).astype(np.float32),
        rgb.astype(np.float32),
        int(nonphysical.sum()),
        keep,
    )
