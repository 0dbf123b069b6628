"""Image-QC values and flags of one subject (neuroadapt.dwi.qc)."""

from __future__ import annotations

import numpy as np
import pytest

from neuroadapt.dwi.qc import b0_snr, image_qc_row
from neuroadapt.dwi.settings import QcSettings

SIGMA = 20.0


def _b0(rng, zero_fraction=0.0, ghost=0.0):
    """A 40^3 b0: a brain of signal 600 in Rician noise, background Rayleigh noise, part of
    the background zero-filled (as scanners do) and a bright ghost band in it."""
    shape = (40, 40, 40)
    brain = np.zeros(shape, bool)
    brain[12:28, 12:28, 12:28] = True
    signal = np.where(brain, 600.0, 0.0)
    noisy = np.abs(signal + rng.normal(0, SIGMA, shape) + 1j * rng.normal(0, SIGMA, shape))
    background = np.zeros(shape, bool)
    background[:8] = background[-8:] = True
    noisy[:8][rng.random(noisy[:8].shape) < zero_fraction * 2] = 0.0
    noisy[-8:-6] += ghost
    return noisy, brain, background


def test_snr_on_pure_rician_noise_is_signal_over_sigma():
    b0, brain, background = _b0(np.random.default_rng(0))
    assert b0_snr(b0, brain, background) == pytest.approx(600 / SIGMA, rel=0.03)


def test_a_zero_filled_background_with_ghosts_does_not_lower_the_snr():
    """The Siemens XA30 series of tests/data/dicom: 21% of the background is 0 and ghosts
    lie in it; a std-based sigma read SNR 5.8 there. Here a fifth of the background is 0 and
    an eighth is ghosted: the median moves by 12%, the std by a factor of more than 2."""
    b0, brain, background = _b0(np.random.default_rng(1), zero_fraction=0.21, ghost=150.0)
    assert b0_snr(b0, brain, background) == pytest.approx(600 / SIGMA, rel=0.15)
    std_based = b0[brain].mean() / (b0[background].std() / np.sqrt(2 - np.pi / 2))
    assert std_based < 0.5 * 600 / SIGMA  # what the former estimate read


def test_a_masked_background_is_not_measurable_and_not_a_flag():
    b0, brain, background = _b0(np.random.default_rng(2))
    b0[background] = 0.0
    snr = b0_snr(b0, brain, background)
    assert np.isnan(snr)
    row = image_qc_row("sub-01", np.zeros(5), snr, np.full(b0.shape, 0.3), brain, 0, QcSettings())
    assert row["flag_b0_snr"] == 0 and row["outlier"] == 0
    low = image_qc_row("sub-01", np.zeros(5), 8.0, np.full(b0.shape, 0.3), brain, 0, QcSettings())
    assert low["flag_b0_snr"] == 1 and low["outlier"] == 1
