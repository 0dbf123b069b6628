"""Static PET from dynamic frames: which frames, their weighted mean, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from neuroadapt.errors import InputError
from neuroadapt.petct.frames import select_frames, static_image

# 0-30 min in 5-min frames, then 30-70 min in 10-min frames; injection at TimeZero.
SIDECAR = {
    "FrameTimesStart": [0, 300, 600, 900, 1200, 1500, 1800, 2400, 3000, 3600],
    "FrameDuration": [300, 300, 300, 300, 300, 300, 600, 600, 600, 600],
    "InjectionStart": 0,
    "ImageDecayCorrected": True,
}


def test_the_default_window_takes_the_frames_of_minutes_50_to_60():
    window = select_frames(SIDECAR, 10)
    assert window.indices == (8,)  # 3000-3600 s; 3600-4200 s has its midpoint at 3900 s
    assert window.durations_s == (600.0,)


def test_the_static_image_is_the_duration_weighted_mean():
    frames = np.arange(10, dtype=float)[None, None, None, :] * np.ones((2, 2, 2, 10))
    window = select_frames(SIDECAR, 10, window_s=(1000, 3000))  # midpoints 1050 ... 2700
    assert window.indices == (3, 4, 5, 6, 7)
    expected = (3 * 300 + 4 * 300 + 5 * 300 + 6 * 600 + 7 * 600) / 2100
    np.testing.assert_allclose(static_image(frames, window), expected, rtol=1e-6)


def test_frame_times_relative_to_a_scan_start_after_the_injection():
    shifted = SIDECAR | {"InjectionStart": -600}  # TimeZero = scan start, 10 min p.i.
    assert select_frames(shifted, 10).indices == (7,)  # midpoint 3300 s p.i.


@pytest.mark.parametrize(
    ("change", "n_frames", "message"),
    [
        (
            {"FrameDuration": None},
            10,
            r"is a dynamic PET of 10 frames and its sidecar has no "
            r"FrameDuration",
        ),
        ({}, 12, r"has 12 frames but 10 FrameTimesStart and 10 FrameDuration values"),
        ({"ImageDecayCorrected": False}, 10, r"frames are not decay corrected"),
        ({"InjectionStart": None}, 10, r"without InjectionStart"),
    ],
)
def test_unusable_frame_information_is_named(change, n_frames, message):
    sidecar = {k: v for k, v in (SIDECAR | change).items() if v is not None}
    with pytest.raises(InputError, match=r"pet.json: .*" + message):
        select_frames(sidecar, n_frames, path="pet.json")
