"""Rigid transforms and voxel grids in world (scanner) coordinates, mm."""

from __future__ import annotations

import numpy as np
from nibabel.affines import apply_affine, from_matvec
from scipy.spatial.transform import Rotation


def rigid_matrix(rotation_deg, translation_mm, centre_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 rigid transform: rotate by ``rotation_deg`` (x, y, z Euler angles, extrinsic,
    degrees) about ``centre_mm``, then translate by ``translation_mm``."""
    rotation = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    centre = np.asarray(centre_mm, dtype=float)
    return from_matvec(rotation, centre - rotation @ centre + np.asarray(translation_mm, float))


def voxel_centres(shape, affine: np.ndarray, supersample: int = 1) -> np.ndarray:
    """World coordinates (N, 3) of voxel centres, or of ``supersample``^3 sub-voxel
    centres per voxel ordered so that ``reshape(*shape, supersample**3)`` groups each
    voxel's samples (C order)."""
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    axes = [np.arange(n)[:, None] + offsets[None, :] for n in shape]  # (n, s) each
    i, si, j, sj, k, sk = np.meshgrid(
        np.arange(shape[0]),
        np.arange(supersample),
        np.arange(shape[1]),
        np.arange(supersample),
        np.arange(shape[2]),
        np.arange(supersample),
        indexing="ij",
    )
    ijk = np.stack(
        [axes[0][i, si], axes[1][j, sj], axes[2][k, sk]], axis=-1
    )  # (X, s, Y, s, Z, s, 3)
    ijk = ijk.transpose(0, 2, 4, 1, 3, 5, 6).reshape(-1, 3)
    return apply_affine(affine, ijk)
