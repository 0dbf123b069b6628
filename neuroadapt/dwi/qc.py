"""Confounds table, the image-QC row and QC figures of one subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from neuroadapt.dwi.motion import PARAMETER_NAMES
from neuroadapt.dwi.settings import QcSettings

#: median of a Rayleigh distribution of scale 1
_RAYLEIGH_MEDIAN = float(np.sqrt(2 * np.log(2)))


def confounds_table(bvals: np.ndarray, parameters: np.ndarray, fd: np.ndarray) -> pd.DataFrame:
    """One row per volume: b-value, motion parameters (mm, radians), framewise displacement."""
    table = pd.DataFrame(parameters, columns=list(PARAMETER_NAMES))
    table.insert(0, "bval", bvals)
    table["framewise_displacement"] = fd
    return table


def b0_snr(b0: np.ndarray, mask: np.ndarray, background: np.ndarray) -> float:
    """Mean b0 signal in the brain over the noise sigma of the background, where magnitude
    noise on zero signal is Rayleigh distributed: sigma = median / sqrt(2 ln 2), over the
    background voxels that are not exactly 0. Written by hand after dipy's SNR example, made
    robust for real exports: the std that example uses read sigma 98 on the Siemens XA30
    series of tests/data/dicom, whose background is 21% zero-filled by the scanner and holds
    ghosts (SNR 5.8 instead of ~200); the median of the non-zero voxels equals the std
    estimate on pure Rician noise (the demo: 30.3 against 30.2). NaN when fewer than 50
    background voxels carry noise (a fully masked background: not measurable)."""
    noise = b0[background]
    noise = noise[noise > 0]
    if noise.size < 50 or not mask.any():
        return float("nan")
    sigma = float(np.median(noise)) / _RAYLEIGH_MEDIAN
    return float(b0[mask].mean() / sigma) if sigma > 0 else float("inf")


def image_qc_row(
    subject: str,
    fd: np.ndarray,
    snr: float,
    fa: np.ndarray,
    mask: np.ndarray,
    nonphysical: int,
    settings: QcSettings,
) -> dict:
    """The subject's image-QC values and outlier flags (1 = outside the configured limit)."""
    inside = int(mask.sum())
    fraction = nonphysical / inside if inside else 1.0
    row = {
        "participant": subject,
        "mean_fd": float(fd.mean()),
        "max_fd": float(fd.max()),
        "b0_snr": float(snr),
        "mean_fa": float(fa[mask].mean()) if inside else float("nan"),
        "mask_voxels": inside,
        "nonphysical_voxels": int(nonphysical),
        "nonphysical_fraction": float(fraction),
    }
    row["flag_mean_fd"] = int(row["mean_fd"] > settings.max_mean_fd_mm)
    row["flag_max_fd"] = int(row["max_fd"] > settings.max_fd_mm)
    # NaN (no noise-carrying background to measure) is not evidence of a low SNR
    row["flag_b0_snr"] = int(bool(snr < settings.min_b0_snr))
    row["flag_nonphysical"] = int(fraction > settings.max_nonphysical_fraction)
    row["outlier"] = int(any(row[k] for k in row if k.startswith("flag_")))
    return row


def tensor_figure(fa: np.ndarray, md: np.ndarray, mask: np.ndarray, path: str | Path) -> None:
    """Axial mosaics of FA and MD (6 slices through the mask) with the mask contour."""
    import matplotlib.pyplot as plt

    from neuroadapt.report.style import OKABE_ITO, save_figure

    z = np.flatnonzero(mask.any(axis=(0, 1)))
    slices = np.linspace(z.min(), z.max(), 8)[1:-1].round().astype(int) if z.size else [0]
    figure, axes = plt.subplots(2, len(slices), figsize=(1.6 * len(slices), 3.6))
    axes = np.atleast_2d(axes)
    for row, (image, name, vmax) in enumerate(
        ((fa, "FA", 1.0), (md * 1e3, "MD (10^-3 mm^2/s)", 3.0))
    ):
        for column, k in enumerate(slices):
            axis = axes[row, column]
            shown = axis.imshow(image[:, :, k].T, origin="lower", cmap="gray", vmin=0, vmax=vmax)
            axis.contour(mask[:, :, k].T, levels=[0.5], colors=OKABE_ITO[1], linewidths=0.6)
            axis.set_axis_off()
            if column == 0:
                axis.set_title(name, fontsize=8, loc="left")
        figure.colorbar(shown, ax=list(axes[row]), fraction=0.02, pad=0.01)
    save_figure(figure, path)


def template_figure(fa: np.ndarray, wm: np.ndarray, brain: np.ndarray, path: str | Path) -> None:
    """FA registered to a template (X, Y, Z on the template grid) with the template's
    white-matter (probability 0.5) and brain-mask contours: axial, coronal and sagittal
    slices at 30, 50 and 70% through the template's brain."""
    import matplotlib.pyplot as plt

    from neuroadapt.report.style import OKABE_ITO, save_figure

    figure, axes = plt.subplots(3, 3, figsize=(6.0, 6.0))
    for row, (axis_index, name) in enumerate(((2, "axial"), (1, "coronal"), (0, "sagittal"))):
        other = tuple(a for a in range(3) if a != axis_index)
        extent = np.flatnonzero(brain.any(axis=other))
        low, high = (extent.min(), extent.max()) if extent.size else (0, fa.shape[axis_index] - 1)
        for column, fraction in enumerate((0.3, 0.5, 0.7)):
            k = int(round(low + fraction * (high - low)))
            image, white, inside = (np.take(a, k, axis=axis_index).T for a in (fa, wm, brain))
            axis = axes[row, column]
            axis.imshow(image, origin="lower", cmap="gray", vmin=0, vmax=1)
            axis.contour(white, levels=[0.5], colors=OKABE_ITO[1], linewidths=0.6)
            axis.contour(inside.astype(float), levels=[0.5], colors=OKABE_ITO[4], linewidths=0.6)
            axis.set_axis_off()
            if column == 0:
                title = f"{name}: FA, template WM (orange), brain (blue)"
                axis.set_title(title, fontsize=7, loc="left")
    save_figure(figure, path)


def motion_figure(confounds: pd.DataFrame, path: str | Path) -> None:
    """Translations (mm), rotations (degrees) and framewise displacement per volume."""
    import matplotlib.pyplot as plt

    from neuroadapt.report.style import OKABE_ITO, save_figure

    figure, axes = plt.subplots(3, 1, figsize=(6, 5), sharex=True)
    volumes = np.arange(len(confounds))
    for k, name in enumerate(PARAMETER_NAMES[:3]):
        axes[0].plot(volumes, confounds[name], color=OKABE_ITO[k], label=name)
    for k, name in enumerate(PARAMETER_NAMES[3:]):
        axes[1].plot(volumes, np.degrees(confounds[name]), color=OKABE_ITO[k], label=name)
    axes[2].plot(volumes, confounds["framewise_displacement"], color=OKABE_ITO[7])
    axes[0].set_ylabel("mm")
    axes[1].set_ylabel("degrees")
    axes[2].set_ylabel("FD (mm)")
    axes[2].set_xlabel("volume")
    for axis in axes[:2]:
        axis.legend(fontsize=7, ncol=3, frameon=False)
    save_figure(figure, path)


def upstream_confounds(dwi_path: str, n_volumes: int) -> tuple[np.ndarray, np.ndarray]:
    """Motion parameters (N, 6; mm, radians) and framewise displacement (N,) of a series
    QSIPrep preprocessed, from its confounds TSV beside the series (``<sub>[_ses]_*confounds*
    .tsv``, the trans_*/rot_* and framewise_displacement columns QSIPrep writes). NaN when
    there is none or it does not describe these volumes: unknown, never zero motion."""
    path = Path(dwi_path)
    prefix = "_".join(p for p in path.name.split("_") if p.startswith(("sub-", "ses-")))
    candidates = sorted(path.parent.glob(f"{prefix}_*confounds*.tsv"))
    unknown = np.full((n_volumes, len(PARAMETER_NAMES)), np.nan), np.full(n_volumes, np.nan)
    if len(candidates) != 1:
        return unknown
    table = pd.read_csv(candidates[0], sep="\t", na_values=["n/a"])
    if len(table) != n_volumes or not set(PARAMETER_NAMES) <= set(table.columns):
        return unknown
    parameters = table[list(PARAMETER_NAMES)].to_numpy(float)
    if "framewise_displacement" not in table:
        return parameters, unknown[1]
    fd = table["framewise_displacement"].to_numpy(float, copy=True)
    fd[0] = 0.0 if np.isnan(fd[0]) else fd[0]  # the first volume's is n/a by definition
    return parameters, fd
