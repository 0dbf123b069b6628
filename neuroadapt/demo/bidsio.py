"""Writing BIDS datasets deterministically: names, sidecars, tables and images.

Used by the synthetic cohort generators. Every writer produces byte-identical files for
identical inputs (sorted JSON keys, fixed float formatting, gzip without timestamps), so a
regenerated demo does not look changed to Snakemake or git.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from neuroadapt import CODE_URL, __version__

BIDS_VERSION = "1.10.0"


def subject_label(index: int, n_subjects: int) -> str:
    """Zero-padded subject label (without ``sub-``), e.g. ``007`` for index 6 of 24."""
    width = max(3, len(str(n_subjects)))
    return f"{index + 1:0{width}d}"


def subject_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Independent random stream per subject.

    Seeding with ``[seed, index, stream]`` means adding subjects never changes the data of
    the subjects already there, and two streams of one subject never correlate.
    """
    return np.random.default_rng([seed, index, stream])


def bids_path(
    subject: str,
    datatype: str,
    suffix: str,
    extension: str,
    session: str | None = None,
    **entities: str,
) -> Path:
    """Relative BIDS path, e.g. ``sub-01/ses-1/dwi/sub-01_ses-1_acq-x_dwi.nii.gz``.

    ``entities`` are written in the order given (callers pass them in BIDS order).
    """
    parts = [f"sub-{subject}"]
    folder = Path(f"sub-{subject}")
    if session is not None:
        parts.append(f"ses-{session}")
        folder = folder / f"ses-{session}"
    parts += [f"{key}-{value}" for key, value in entities.items()]
    return folder / datatype / ("_".join(parts) + f"_{suffix}{extension}")


def write_json(path: str | os.PathLike, payload: Mapping) -> None:
    """JSON sidecar with sorted keys and a final newline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_tsv(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """BIDS TSV: tab separated, ``n/a`` for missing values, ``\\n`` line ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(
        path, sep="\t", index=False, na_rep="n/a", lineterminator="\n", float_format="%.6g"
    )


def write_nifti(
    path: str | os.PathLike,
    data: np.ndarray,
    affine: np.ndarray,
    dtype: type | str = np.float32,
    *,
    slope_inter: tuple[float, float] | None = None,
    tr_seconds: float | None = None,
) -> None:
    """Save a NIfTI-1 image with sform and qform set, units mm (and s for 4D).

    ``slope_inter`` stores integer data with a scale, as scanners do (e.g. CT in int16
    with slope 1, intercept -1024).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(data)
    if slope_inter is not None:
        slope, inter = slope_inter
        array = np.round((array - inter) / slope)
        info = np.iinfo(np.dtype(dtype))
        array = np.clip(array, info.min, info.max)
    image = nib.Nifti1Image(array.astype(dtype), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    if slope_inter is not None:
        image.header.set_slope_inter(*slope_inter)
    if tr_seconds is not None and array.ndim == 4:
        zooms = list(image.header.get_zooms()[:3]) + [tr_seconds]
        image.header.set_zooms(zooms)
    nib.save(image, path)


def write_dataset_description(root: str | os.PathLike, name: str, description: str) -> None:
    """``dataset_description.json`` of a raw dataset produced by neuroadapt's generator."""
    write_json(
        Path(root) / "dataset_description.json",
        {
            "Name": name,
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["neuroadapt synthetic cohort generator"],
            "HowToAcknowledge": description,
            "GeneratedBy": [{"Name": "neuroadapt", "Version": __version__, "CodeURL": CODE_URL}],
        },
    )


def write_derivative_description(root: str | os.PathLike, name: str) -> None:
    """``dataset_description.json`` of a derivatives dataset (e.g. manual masks)."""
    write_json(
        Path(root) / "dataset_description.json",
        {
            "Name": name,
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "neuroadapt", "Version": __version__, "CodeURL": CODE_URL}],
        },
    )
