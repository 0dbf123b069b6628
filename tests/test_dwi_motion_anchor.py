"""The b0 anchor of the diffusion-weighted volumes' common frame (neuroadapt.dwi.motion)."""

from __future__ import annotations

import numpy as np
from nibabel.affines import apply_affine

from neuroadapt.dwi.motion import b0_anchor, data_points
from neuroadapt.geometry import rigid_matrix


def test_b0_anchor_undoes_a_common_offset_of_the_weighted_volumes():
    """Every volume has the pose of its b0 neighbour, but the diffusion-weighted ones all
    carry one extra common rigid offset; the anchor removes exactly that offset."""
    rng = np.random.default_rng(0)
    is_b0 = np.zeros(20, dtype=bool)
    is_b0[[0, 7, 14]] = True
    centre = np.array([2.0, -5.0, 10.0])
    # piecewise-constant true poses: each volume has the pose of its nearest b0
    poses = [rigid_matrix(rng.normal(0, 2, 3), rng.normal(0, 2, 3), centre) for _ in range(3)]
    poses[0] = np.eye(4)
    true = np.stack([poses[min(round(t / 7), 2)] for t in range(20)])
    offset = rigid_matrix(np.array([1.5, -2.0, 0.5]), np.array([2.0, 1.0, -3.0]), centre)
    estimated = true.copy()
    estimated[~is_b0] = true[~is_b0] @ offset
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[2:8, 2:8, 2:8] = True
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = -18.0
    points = data_points(mask, affine)

    anchor = b0_anchor(estimated, is_b0, points)

    assert np.allclose(offset @ anchor, np.eye(4), atol=1e-9)
    corrected = estimated[~is_b0] @ anchor
    moved = [
        apply_affine(c, points) - apply_affine(t, points)
        for c, t in zip(corrected, true[~is_b0], strict=True)
    ]
    assert max(np.abs(m).max() for m in moved) < 1e-6


def test_b0_anchor_is_the_identity_without_weighted_neighbours():
    is_b0 = np.array([True, True])
    points = np.random.default_rng(1).normal(0, 30, (50, 3))
    assert np.array_equal(
        b0_anchor(np.repeat(np.eye(4)[None], 2, axis=0), is_b0, points), np.eye(4)
    )


def test_data_points_are_world_coordinates_of_the_mask_thinned():
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[1, 2, 3] = True
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [10.0, 0.0, -1.0]
    assert np.allclose(data_points(mask, affine), [[12.0, 6.0, 11.0]])
    assert len(data_points(np.ones((30, 30, 30), dtype=bool), affine, most=1000)) <= 1100
