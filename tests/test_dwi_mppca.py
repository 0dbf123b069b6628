"""Batched MP-PCA (neuroadapt.dwi.mppca) against dipy's mppca, which it re-implements."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from dipy.data import get_fnames
from dipy.denoise.localpca import mppca as dipy_mppca

from neuroadapt.dwi.mppca import mppca


@pytest.fixture(scope="module")
def real_series() -> np.ndarray:
    """dipy's shipped real scan small_64D: 10x10x10, b0 + 64 directions."""
    image, _, _ = get_fnames(name="small_64D")
    return nib.load(image).get_fdata(dtype=np.float32)


def agreement(data: np.ndarray, mask: np.ndarray | None, patch_radius: int = 2) -> tuple:
    with np.errstate(invalid="ignore"):
        reference, reference_sigma = dipy_mppca(
            data, mask=mask, patch_radius=patch_radius, return_sigma=True
        )
    ours, sigma = mppca(data, mask=mask, patch_radius=patch_radius)
    assert ours.dtype == np.float32 and ours.shape == data.shape
    # the uncovered border is NaN in both, and nowhere else
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(reference))
    scale = np.nanmax(reference)
    return (
        np.nanmax(np.abs(ours - reference)) / scale,
        np.nanmax(np.abs(sigma - reference_sigma)) / np.nanmax(reference_sigma),
    )


@pytest.mark.parametrize("masked", [True, False])
def test_equals_dipys_mppca_on_a_real_scan(real_series, masked):
    mask = real_series[..., 0] > np.percentile(real_series[..., 0], 40) if masked else None
    image_error, sigma_error = agreement(real_series, mask)
    # float32 (dipy) against float64 (ours) rounding only
    assert image_error < 1e-5 and sigma_error < 1e-5, (image_error, sigma_error)


def test_equals_dipys_mppca_with_a_flat_axis_and_another_radius(real_series):
    # one slice: the patch is flat on that axis, as in dipy
    image_error, sigma_error = agreement(real_series[:, :, 4:5, :20], None, patch_radius=3)
    assert image_error < 1e-5 and sigma_error < 1e-5, (image_error, sigma_error)


def test_removes_noise_from_a_low_rank_series():
    rng = np.random.default_rng(0)
    clean = np.einsum(
        "xyzk,kn->xyzn", rng.uniform(1, 2, (12, 12, 12, 2)), rng.uniform(50, 100, (2, 30))
    )
    noisy = (clean + rng.normal(0, 5, clean.shape)).astype(np.float32)
    denoised, sigma = mppca(noisy, patch_radius=2)
    inner = (slice(2, -2),) * 3
    assert np.std(denoised[inner] - clean[inner]) < 0.4 * np.std(noisy[inner] - clean[inner])
    assert np.median(sigma[inner]) == pytest.approx(5, rel=0.15)


def test_a_patch_larger_than_the_image_is_an_error(real_series):
    with pytest.raises(ValueError, match="patch radius 6 cannot fit shape"):
        mppca(real_series, patch_radius=6)
