"""The dicom stage on the real series of tests/data/dicom: conversion time, FA agreement with
an independent dipy fit, and the image-QC values, one row per series.

    .venv/bin/python benchmarks/bench_dicom.py        # ~2 min on 2 cores

Per series: DICOM files and archive size, seconds of dcm2bids + dcm2niix (convert_dataset),
the converted shape; FA of the pipeline with preprocessing off against dipy's WLS fit of
the converted files (max and median |dFA| in the brain mask), with the full default
preprocessing (correlation and median difference against the same raw fit); the QC row of
the full run (b0 SNR, mean FD, the largest translation along the phase-encoding axis j,
where eddy currents shift diffusion-weighted volumes). The GE series' volumes carry
identical pixels, so it is converted and timed only.
"""

from __future__ import annotations

import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from dipy.core.gradients import gradient_table
from dipy.io.gradients import read_bvals_bvecs
from dipy.reconst.dti import TensorModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from neuroadapt.dicom import convert_dataset  # noqa: E402
from neuroadapt.dwi.pipeline import outputs_in, process_subject  # noqa: E402
from neuroadapt.dwi.settings import settings_from_config  # noqa: E402

DATA = REPO / "tests" / "data" / "dicom"
SERIES = {  # participant: (archive, dwi settings the series needs, tensor fitted?)
    "sub-01": ("siemens_xa30_dwi.tar.gz", {"tensor": {"max_bval": 2600}}, True),
    "sub-02": ("ge_signa_dwi.tar.gz", {}, False),
    "sub-03": ("uih_umr770_dwi.tar.gz", {}, True),
}
MAPPING = {
    "descriptions": [
        {"datatype": "dwi", "suffix": "dwi", "criteria": {"SeriesDescription": pattern}}
        for pattern in ("*DWI*", "dti_tra*")
    ]
}
OFF = {"denoise": {"method": "none"}, "bias": {"enabled": False}, "motion": {"enabled": False}}


def direct_fa(stem: Path) -> np.ndarray:
    image = nib.load(f"{stem}.nii.gz")
    bvals, bvecs = read_bvals_bvecs(f"{stem}.bval", f"{stem}.bvec")
    fit = TensorModel(gradient_table(bvals, bvecs=bvecs), fit_method="WLS").fit(image.get_fdata())
    canonical = nib.as_closest_canonical(nib.Nifti1Image(np.clip(fit.fa, 0, 1), image.affine))
    return canonical.get_fdata()


def run_pipeline(stem: Path, settings: dict, out: Path, label: str) -> dict:
    outputs = outputs_in(out)
    process_subject(
        f"{stem}.nii.gz",
        f"{stem}.bval",
        f"{stem}.bvec",
        [],
        settings_from_config(settings),
        outputs,
        label,
    )
    return outputs


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-dicom-"))
    dicom = work / "dicom"
    for participant, (archive, _, _) in SERIES.items():
        with tarfile.open(DATA / archive) as tar:
            tar.extractall(dicom / participant, filter="data")
    mapping = work / "dcm2bids.json"
    mapping.write_text(json.dumps(MAPPING))
    summary = convert_dataset(dicom, mapping, work / "bids")
    rows = []
    for entry in summary["subjects"]:
        participant = entry["participant_id"]
        archive, settings, fitted = SERIES[participant]
        stem = work / "bids" / participant / "dwi" / f"{participant}_dwi"
        sidecar = json.loads(Path(f"{stem}.json").read_text())
        row = {
            "series": f"{sidecar['Manufacturer']} {sidecar.get('ManufacturersModelName', '')}",
            "files": sum(1 for p in (dicom / participant).rglob("*") if p.is_file()),
            "archive_MB": round((DATA / archive).stat().st_size / 1e6, 2),
            "convert_s": entry["seconds"],
            "shape": "x".join(map(str, nib.load(f"{stem}.nii.gz").shape)),
        }
        if fitted:
            raw = direct_fa(stem)
            off = run_pipeline(stem, OFF | settings, work / "off" / participant, participant)
            mask = nib.load(off["mask"]).get_fdata() > 0
            diff = np.abs(nib.load(off["fa"]).get_fdata()[mask] - raw[mask])
            started = time.perf_counter()
            full = run_pipeline(stem, settings, work / "full" / participant, participant)
            seconds = time.perf_counter() - started
            mask = nib.load(full["mask"]).get_fdata() > 0
            fa = nib.load(full["fa"]).get_fdata()[mask]
            qc = pd.read_csv(full["imageqc"], sep="\t").iloc[0]
            confounds = pd.read_csv(full["confounds"], sep="\t")
            row |= {
                "off_max_dFA": f"{diff.max():.1e}",
                "off_median_dFA": f"{np.median(diff):.1e}",
                "full_r": round(float(np.corrcoef(fa, raw[mask])[0, 1]), 3),
                "full_median_dFA": round(float(np.median(fa) - np.median(raw[mask])), 4),
                "full_s": round(seconds, 1),
                "b0_snr": round(float(qc.b0_snr), 1),
                "mean_fd_mm": round(float(qc.mean_fd), 2),
                "max_abs_trans_y_mm": round(float(confounds.trans_y.abs().max()), 2),
            }
        rows.append(row)
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"\nwork folder: {work}")


if __name__ == "__main__":
    main()
