"""DICOM to BIDS on real scanner exports (tests/data/dicom/README.md: Siemens XA30, GE
SIGNA and UIH uMR 770 diffusion series from the dcm2niix validation repositories), through
ingestion and the diffusion pipeline to FA, checked against an independent dipy fit of the
same files."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, dwi_output_paths
from dipy.core.gradients import gradient_table
from dipy.io.gradients import read_bvals_bvecs
from dipy.reconst.dti import TensorModel

from neuroadapt.bids import ingest
from neuroadapt.dicom import convert_dataset, dicom_subjects
from neuroadapt.dwi.pipeline import process_subject
from neuroadapt.dwi.settings import settings_from_config
from neuroadapt.errors import InputError

DATA = REPO / "tests" / "data" / "dicom"
SERIES = {
    "sub-01": "siemens_xa30_dwi.tar.gz",
    "sub-02": "ge_signa_dwi.tar.gz",
    "sub-03": "uih_umr770_dwi.tar.gz",
}
MAPPING = {
    "descriptions": [
        {"datatype": "dwi", "suffix": "dwi", "criteria": {"SeriesDescription": "*DWI*"}},
        {"datatype": "dwi", "suffix": "dwi", "criteria": {"SeriesDescription": "dti_tra*"}},
    ]
}
#: the Siemens series is one b=2500 shell: the tensor fit must be allowed to use it
SHELL = {"tensor": {"max_bval": 2600}}
OFF = {"denoise": {"method": "none"}, "bias": {"enabled": False}, "motion": {"enabled": False}}


@pytest.fixture(scope="module")
def dicom_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dicom")
    for participant, archive in SERIES.items():
        with tarfile.open(DATA / archive) as tar:
            tar.extractall(root / participant, filter="data")
    return root


@pytest.fixture(scope="module")
def mapping(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mapping") / "dcm2bids.json"
    path.write_text(json.dumps(MAPPING))
    return path


@pytest.fixture(scope="module")
def converted(dicom_dir, mapping, tmp_path_factory) -> tuple[Path, dict]:
    table = tmp_path_factory.mktemp("table") / "my_participants.tsv"
    table.write_text("participant_id\tdiagnosis\n01\tTD\n02\tADHD\n03\tTD\n04\tTD\n")
    bids = tmp_path_factory.mktemp("out") / "bids"
    return bids, convert_dataset(dicom_dir, mapping, bids, participants_table=table)


def test_real_siemens_ge_and_uih_series_become_a_dataset_that_ingests(converted):
    bids, summary = converted
    assert [s["participant_id"] for s in summary["subjects"]] == list(SERIES)
    assert summary["subjects"][0]["files"] == [
        f"sub-01/dwi/sub-01_dwi.{ext}" for ext in ("bval", "bvec", "json", "nii.gz")
    ]
    shapes = {p: nib.load(bids / p / "dwi" / f"{p}_dwi.nii.gz").shape for p in SERIES}
    assert shapes == {
        "sub-01": (72, 72, 39, 21),
        "sub-02": (256, 256, 2, 7),
        "sub-03": (64, 64, 20, 17),
    }
    uih = np.loadtxt(bids / "sub-03" / "dwi" / "sub-03_dwi.bval")
    assert uih[0] < 2 and np.allclose(uih[1:], 929.75)  # a b=1.25 "b0" and 16 directions
    bvals = np.loadtxt(bids / "sub-01" / "dwi" / "sub-01_dwi.bval")
    assert bvals[0] == 0 and set(bvals[1:]) == {2500}
    sidecar = json.loads((bids / "sub-02" / "dwi" / "sub-02_dwi.json").read_text())
    assert sidecar["Manufacturer"] == "GE" and sidecar["PhaseEncodingDirection"]
    description = json.loads((bids / "dataset_description.json").read_text())
    assert [tool["Name"] for tool in description["GeneratedBy"]] == ["dcm2bids", "dcm2niix"]
    assert not (bids / "tmp_dcm2bids").exists()
    # the user's table, with sub- added and restricted to the converted participants
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    assert participants.to_dict("list") == {
        "participant_id": ["sub-01", "sub-02", "sub-03"],
        "diagnosis": ["TD", "ADHD", "TD"],
    }
    rows = ingest(bids, required=["dwi"], label="diagnosis", covariates=[]).table
    assert list(rows.participant_id) == list(SERIES)


def _direct_fa(bids: Path, participant: str) -> np.ndarray:
    """dipy's WLS fit of the converted files as they are, in the pipeline's RAS grid."""
    folder = bids / participant / "dwi"
    image = nib.load(folder / f"{participant}_dwi.nii.gz")
    bvals, bvecs = read_bvals_bvecs(
        str(folder / f"{participant}_dwi.bval"), str(folder / f"{participant}_dwi.bvec")
    )
    fit = TensorModel(gradient_table(bvals, bvecs=bvecs), fit_method="WLS").fit(image.get_fdata())
    return nib.as_closest_canonical(
        nib.Nifti1Image(np.clip(fit.fa, 0, 1), image.affine)
    ).get_fdata()


def _pipeline(bids: Path, participant: str, config: dict, out: Path) -> dict:
    folder = bids / participant / "dwi"
    outputs = dwi_output_paths(out)
    process_subject(
        str(folder / f"{participant}_dwi.nii.gz"),
        str(folder / f"{participant}_dwi.bval"),
        str(folder / f"{participant}_dwi.bvec"),
        [],
        settings_from_config(config),
        outputs,
        participant,
    )
    return outputs


def test_siemens_fa_without_preprocessing_equals_an_independent_fit(converted, tmp_path):
    bids, _ = converted
    outputs = _pipeline(bids, "sub-01", OFF | SHELL, tmp_path)
    mask = nib.load(outputs["mask"]).get_fdata() > 0
    fa = nib.load(outputs["fa"]).get_fdata()
    assert mask.sum() > 10_000
    # float32 outputs against a float64 fit: largest difference 1.1e-4, median 1.5e-7
    assert np.allclose(fa[mask], _direct_fa(bids, "sub-01")[mask], atol=2e-4)
    assert 0.1 < np.median(fa[mask]) < 0.5  # brain tissue, not a fit of noise


def test_siemens_fa_with_full_preprocessing_agrees_with_the_raw_fit(converted, tmp_path):
    """Denoising and motion correction change the data; FA must stay close to the raw fit
    where the brain is (measured: see the README's DICOM section)."""
    bids, _ = converted
    outputs = _pipeline(bids, "sub-01", SHELL, tmp_path)
    mask = nib.load(outputs["mask"]).get_fdata() > 0
    fa = nib.load(outputs["fa"]).get_fdata()[mask]
    direct = _direct_fa(bids, "sub-01")[mask]
    assert np.corrcoef(fa, direct)[0, 1] > 0.8
    assert abs(np.median(fa) - np.median(direct)) < 0.05


def test_uih_fa_without_preprocessing_equals_an_independent_fit(converted, tmp_path):
    """A second vendor with real diffusion contrast (16 directions at b=930; the GE series'
    volumes carry identical pixels)."""
    bids, _ = converted
    outputs = _pipeline(bids, "sub-03", OFF, tmp_path)
    mask = nib.load(outputs["mask"]).get_fdata() > 0
    fa = nib.load(outputs["fa"]).get_fdata()
    assert mask.sum() > 10_000
    assert np.allclose(fa[mask], _direct_fa(bids, "sub-03")[mask], atol=2e-4)
    assert 0.1 < np.median(fa[mask]) < 0.4 and np.mean(fa[mask] > 0.5) > 0.03


def test_uih_fa_with_full_preprocessing_agrees_with_the_raw_fit(converted, tmp_path):
    bids, _ = converted
    outputs = _pipeline(bids, "sub-03", {}, tmp_path)
    mask = nib.load(outputs["mask"]).get_fdata() > 0
    fa = nib.load(outputs["fa"]).get_fdata()[mask]
    direct = _direct_fa(bids, "sub-03")[mask]
    assert np.corrcoef(fa, direct)[0, 1] > 0.8
    assert abs(np.median(fa) - np.median(direct)) < 0.05
    # the b0 SNR of a normal scan is not flagged (measured 92; the former std-based
    # estimate read 10.2 here and 5.8 on the Siemens series)
    qc = pd.read_csv(outputs["imageqc"], sep="\t").iloc[0]
    assert qc.b0_snr > 50 and qc.flag_b0_snr == 0


def test_a_single_high_shell_with_the_default_max_bval_is_an_error_not_fa_zero(converted, tmp_path):
    bids, _ = converted
    with pytest.raises(
        InputError,
        match=r"has 0 diffusion-weighted volume\(s\) with b <= 1200 for the tensor fit \(needs "
        r"6\); its shells: \[2500\].*Fix: set dwi.tensor.max_bval",
    ):
        _pipeline(bids, "sub-01", OFF, tmp_path)


def test_a_mapping_without_descriptions_is_named(dicom_dir, tmp_path):
    mapping = tmp_path / "bad.json"
    mapping.write_text('{"search_method": "fnmatch"}')
    with pytest.raises(InputError, match=r"bad.json: has no 'descriptions' list"):
        convert_dataset(dicom_dir, mapping, tmp_path / "bids")
    assert not (tmp_path / "bids").exists()


def test_a_series_no_description_matches_names_the_folder_and_its_series(dicom_dir, tmp_path):
    mapping = tmp_path / "t1.json"
    mapping.write_text(
        json.dumps(
            {
                "descriptions": [
                    {
                        "datatype": "anat",
                        "suffix": "T1w",
                        "criteria": {"SeriesDescription": "*MPRAGE*"},
                    }
                ]
            }
        )
    )
    with pytest.raises(
        InputError,
        match=r"sub-01: no series matched a description of the dcm2bids configuration \(its "
        r"series: DWI_dir80_PA\)",
    ):
        convert_dataset(dicom_dir, mapping, tmp_path / "bids")
    assert not (tmp_path / "bids").exists()  # nothing half-written


def test_a_participant_missing_from_the_users_table_is_named(dicom_dir, mapping, tmp_path):
    table = tmp_path / "table.tsv"
    table.write_text("participant_id\tdiagnosis\nsub-01\tTD\n")
    with pytest.raises(
        InputError, match=r"table.tsv: has no row for converted participant\(s\) sub-02, sub-03"
    ):
        convert_dataset(dicom_dir, mapping, tmp_path / "bids", participants_table=table)


def test_participant_and_session_folders(tmp_path):
    for folder in ("sub-01/ses-1", "sub-01/ses-2", "02/scans"):
        (tmp_path / folder).mkdir(parents=True)
    found = [(s.participant, s.session) for s in dicom_subjects(tmp_path)]
    assert found == [("02", None), ("01", "1"), ("01", "2")]
    (tmp_path / "sub_03").mkdir()
    with pytest.raises(InputError, match=r"sub_03: 'sub_03' is not a BIDS sub label"):
        dicom_subjects(tmp_path)


@pytest.mark.workflow
def test_the_dicom_rule_converts_a_configured_dataset_before_ingestion(
    dicom_dir, mapping, tmp_path
):
    """`datasets.<name>.dicom_dir`: the dicom rule writes results/<name>/bids, ingestion
    reads it; a changed participants table reruns the conversion and what follows."""
    import subprocess
    import sys

    import yaml

    table = tmp_path / "participants_table.tsv"
    table.write_text("participant_id\tdiagnosis\nsub-01\tTD\nsub-02\tADHD\nsub-03\tTD\n")
    config = {
        "datasets": {
            "study": {
                "dicom_dir": str(dicom_dir),
                "dicom_mapping": str(mapping),
                "dicom_participants": str(table),
                "label": "diagnosis",
            }
        },
        "experiments": {
            "dti": {
                "dataset": "study",
                "inputs": ["fa", "md"],
                "target": "diagnosis",
                "task": "binary",
                "methods": [],
            }
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [
        str(Path(sys.executable).parent / "snakemake"),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--cores",
        "1",
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "config.yaml"),
        "--replace-workflow-config",
        "results/study/subjects.tsv",
    ]

    def run(*extra):
        result = subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    run()
    subjects = pd.read_csv(tmp_path / "results/study/subjects.tsv", sep="\t")
    assert list(subjects.participant_id) == list(SERIES)
    assert list(subjects.diagnosis) == ["TD", "ADHD", "TD"]
    assert subjects.dwi[0] == "results/study/bids/sub-01/dwi/sub-01_dwi.nii.gz"
    assert (
        "3 participant/session folders converted" in (tmp_path / "logs/dicom/study.log").read_text()
    )
    assert "Nothing to be done" in run("-n")
    table.write_text("participant_id\tdiagnosis\nsub-01\tADHD\nsub-02\tADHD\nsub-03\tTD\n")
    plan = run("-n")
    assert "dicom" in plan and "ingest" in plan
