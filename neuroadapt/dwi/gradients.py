"""Loading a DWI series with its b-values/b-vectors, checking them, and reorienting to RAS.

b-vectors are read and written in FSL convention (3 rows, one column per volume, along the
image's voxel axes, with x negated when the voxel-to-world matrix has a positive
determinant). In memory they are kept along the voxel axes of the data (``bvecs_voxel``,
shape (N, 3)), which is what dipy's gradient tables expect.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from dipy.core.gradients import gradient_table, reorient_bvecs

from neuroadapt.bids import check_image
from neuroadapt.bids import read_gradients as check_gradient_files
from neuroadapt.errors import InputError

UNIT_TOLERANCE = 0.05  # |norm - 1| allowed for b-vectors of diffusion-weighted volumes


@dataclass(frozen=True)
class DwiSeries:
    """A 4D DWI series (X, Y, Z, N) with b-values (N,) in s/mm^2 and unit b-vectors (N, 3)
    along the voxel axes; zero vectors for b=0 volumes."""

    data: np.ndarray
    affine: np.ndarray
    bvals: np.ndarray
    bvecs_voxel: np.ndarray
    header: nib.Nifti1Header | None = None

    def gtab(self, b0_threshold: float = 50.0):
        return gradient_table(self.bvals, bvecs=self.bvecs_voxel, b0_threshold=b0_threshold)

    def b0_mask(self, b0_threshold: float = 50.0) -> np.ndarray:
        return self.bvals <= b0_threshold


def voxel_axes(affine: np.ndarray) -> np.ndarray:
    """Unit world directions (columns) of the voxel axes; the rotation part of a sheared
    affine by polar decomposition."""
    matrix = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    u, _, vt = np.linalg.svd(matrix)
    return u @ vt


def fsl_to_voxel(bvecs_fsl: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(3, N) FSL b-vectors -> (N, 3) vectors along the voxel axes."""
    vectors = np.array(bvecs_fsl, dtype=float).T.copy()
    if np.linalg.det(affine[:3, :3]) > 0:
        vectors[:, 0] *= -1
    return vectors


def voxel_to_fsl(bvecs_voxel: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(N, 3) voxel-axis vectors -> (3, N) FSL b-vectors of an image with ``affine``."""
    return fsl_to_voxel(np.asarray(bvecs_voxel).T, affine).T


def load_dwi(image: str | Path, bval: str | Path, bvec: str | Path, b0_threshold: float = 50.0):
    """Load and check a DWI series; InputError naming the file for every problem:
    not 4D, NaN/inf voxels, unreadable or mismatched .bval/.bvec, no b=0 volume,
    b-vectors that are not unit length."""
    image, bval, bvec = Path(image), Path(bval), Path(bvec)
    nifti = check_image(image, ndim=4, check_data=True)
    n_volumes = nifti.shape[3]
    check_gradient_files(bval, bvec, n_volumes, image)
    bvals = np.loadtxt(bval, ndmin=1, dtype=float).ravel()
    bvecs_fsl = np.loadtxt(bvec, ndmin=2, dtype=float)
    if bvecs_fsl.shape[0] != 3:
        bvecs_fsl = bvecs_fsl.T
    if (bvals < 0).any():
        raise InputError(bval, "has negative b-values", "b-values are in s/mm^2, 0 or more")
    if not (bvals <= b0_threshold).any():
        raise InputError(
            bval,
            f"has no b=0 volume (every b-value is above {b0_threshold:g} s/mm^2)",
            "include the b=0 volumes of the acquisition (needed as reference and for S0), "
            "or raise dwi.b0_threshold if your b0 volumes have a small nominal b-value",
        )
    weighted = bvals > b0_threshold
    norms = np.linalg.norm(bvecs_fsl, axis=0)
    off = np.flatnonzero(weighted & (np.abs(norms - 1) > UNIT_TOLERANCE))
    if off.size:
        raise InputError(
            bvec,
            f"has b-vectors that are not unit length for volumes {off[:5].tolist()} "
            f"(norms {np.round(norms[off[:5]], 3).tolist()})",
            "give unit directions and put the diffusion weighting in the .bval file "
            "(normalise the vectors and scale the b-values by the squared norm)",
        )
    vectors = fsl_to_voxel(bvecs_fsl, nifti.affine)
    vectors[weighted] /= norms[weighted, None]
    # b~0 volumes keep a unit vector if they have one (a b=15 volume still weights
    # diffusion a little, as in dipy's own fit); zero or NaN vectors become 0.
    unit = np.abs(norms - 1) <= UNIT_TOLERANCE
    vectors[~weighted & ~unit] = 0.0
    data = np.asarray(nifti.dataobj, dtype=np.float32)
    return DwiSeries(data, nifti.affine.copy(), bvals, vectors, nifti.header)


def to_ras(series: DwiSeries) -> DwiSeries:
    """The series reoriented to the closest canonical (RAS+) voxel order, b-vectors
    re-expressed along the new voxel axes (nibabel's ``as_closest_canonical``; the
    vectors' world directions are unchanged)."""
    image = nib.Nifti1Image(series.data, series.affine, series.header)
    canonical = nib.as_closest_canonical(image)
    world = series.bvecs_voxel @ voxel_axes(series.affine).T
    vectors = world @ voxel_axes(canonical.affine)
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    return replace(series, data=data, affine=canonical.affine.copy(), bvecs_voxel=vectors)


def rotate_bvecs(
    series_bvecs_voxel: np.ndarray,
    bvals: np.ndarray,
    world_transforms: np.ndarray,
    affine: np.ndarray,
    b0_threshold: float = 50.0,
) -> np.ndarray:
    """b-vectors after motion correction: each volume's vector rotated by the inverse of
    the rotation of its (N, 4, 4) world transform (reference -> volume), with dipy's
    ``reorient_bvecs``; transforms are first expressed along the voxel axes."""
    axes = voxel_axes(affine)
    gtab = gradient_table(bvals, bvecs=series_bvecs_voxel, b0_threshold=b0_threshold)
    weighted = ~gtab.b0s_mask
    rotations = np.stack([axes.T @ t[:3, :3] @ axes for t in world_transforms[weighted]], -1)
    if rotations.shape[-1] == 0:
        return np.asarray(series_bvecs_voxel, dtype=float).copy()
    return reorient_bvecs(gtab, rotations).bvecs
