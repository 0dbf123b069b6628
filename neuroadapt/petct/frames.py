"""A static PET image from the frames of a dynamic (4D) PET.

BIDS-PET gives each frame's start (``FrameTimesStart``, s after ``TimeZero``) and length
(``FrameDuration``, s). The static image is the duration-weighted mean of the frames whose
midpoint lies in a window of time after the injection (``InjectionStart``), by default 50-60
min: the last ten minutes of the standard 60-minute FDG uptake period (EANM FDG PET/CT
guideline 2.0: imaging at 60 min post injection), what a static SUV is read at. Frames must
be decay corrected to a common time (``ImageDecayCorrected``), so their mean is in the same
units and the SUV step decays from that one time. Motion between frames is not corrected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuroadapt.errors import InputError

__all__ = ["DEFAULT_WINDOW_S", "FrameWindow", "check_frame_times", "select_frames", "static_image"]

#: seconds after the injection: 50-60 min, the end of the standard FDG uptake period
DEFAULT_WINDOW_S = (3000.0, 3600.0)
WINDOW_KEY = "petct.static_window_s"


@dataclass(frozen=True)
class FrameWindow:
    """The frames a static image is made of (indices into the 4D series)."""

    indices: tuple[int, ...]
    starts_s: tuple[float, ...]  # after TimeZero, as in the sidecar
    durations_s: tuple[float, ...]
    window_s: tuple[float, float]  # after the injection

    def as_sidecar(self) -> dict:
        return {
            "StaticFromDynamic": {
                "Frames": list(self.indices),
                "FrameTimesStart": list(self.starts_s),
                "FrameDuration": list(self.durations_s),
                "WindowAfterInjectionSeconds": list(self.window_s),
                "Selection": "frames whose midpoint lies in the window",
                "Combination": "mean weighted by frame duration",
            }
        }


def check_frame_times(sidecar: Mapping, n_frames: int, path: str | Path) -> None:
    """A dynamic PET's sidecar has ``n_frames`` frame starts and durations, or InputError."""
    starts, durations = sidecar.get("FrameTimesStart"), sidecar.get("FrameDuration")
    if starts is None or durations is None:
        absent = " and ".join(
            k for k, v in (("FrameTimesStart", starts), ("FrameDuration", durations)) if v is None
        )
        raise InputError(
            path,
            f"is a dynamic PET of {n_frames} frames and its sidecar has no {absent}",
            "add FrameTimesStart and FrameDuration (s, one per frame; dcm2niix writes them), "
            "or give a static 3D image",
        )
    if len(starts) != n_frames or len(durations) != n_frames:
        raise InputError(
            path,
            f"has {n_frames} frames but {len(starts)} FrameTimesStart and {len(durations)} "
            "FrameDuration values",
            "give one start and one duration per frame",
        )


def select_frames(
    sidecar: Mapping,
    n_frames: int,
    window_s: Sequence[float] = DEFAULT_WINDOW_S,
    path: str | Path = "<PET sidecar>",
) -> FrameWindow:
    """The frames of the window (seconds after the injection); InputError naming ``path``
    when frame times are missing, the frames are not decay corrected, or none lies in it."""
    check_frame_times(sidecar, n_frames, path)
    if sidecar.get("ImageDecayCorrected") is False:
        raise InputError(
            path,
            "is a dynamic PET whose frames are not decay corrected, so their mean has no "
            "single decay time",
            "reconstruct the frames with decay correction (DICOM DecayCorrection START)",
        )
    if "InjectionStart" not in sidecar:
        raise InputError(
            path,
            "is a dynamic PET without InjectionStart, so the uptake window cannot be placed",
            "add InjectionStart (s after TimeZero) to the sidecar",
        )
    injection = float(sidecar["InjectionStart"])
    starts = np.asarray(sidecar["FrameTimesStart"], float)
    durations = np.asarray(sidecar["FrameDuration"], float)
    low, high = (float(v) for v in window_s)
    middle = starts + durations / 2 - injection
    chosen = np.flatnonzero((middle >= low) & (middle <= high))
    if chosen.size == 0:
        first, last = starts[0] - injection, starts[-1] + durations[-1] - injection
        raise InputError(
            path,
            f"has no frame in the window {low:g}-{high:g} s after the injection (its frames "
            f"cover {first:g}-{last:g} s)",
            f"set {WINDOW_KEY} to the part of the scan to read SUV from, e.g. "
            f"[{max(first, last - 600):g}, {last:g}]",
        )
    return FrameWindow(
        indices=tuple(int(k) for k in chosen),
        starts_s=tuple(float(starts[k]) for k in chosen),
        durations_s=tuple(float(durations[k]) for k in chosen),
        window_s=(low, high),
    )


def static_image(frames, window: FrameWindow) -> np.ndarray:
    """Duration-weighted mean over the window's frames of an (X, Y, Z, T) array or nibabel
    array proxy (read one frame at a time: a dynamic series can be larger than memory)."""
    weights = np.asarray(window.durations_s) / np.sum(window.durations_s)
    total = None
    for index, weight in zip(window.indices, weights, strict=True):
        frame = np.asarray(frames[..., index], np.float64) * weight
        total = frame if total is None else total + frame
    return total.astype(np.float32)
