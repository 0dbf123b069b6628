"""PET from DICOM to SUV. No public PET DICOM series is at hand, so the demo generator's FDG
PET is written as a DICOM PET series (neuroadapt.demo.pet_dicom, pydicom), static and as a
dynamic series of frames; the dicom stage converts it (dcm2niix) and adds the SUV fields
from the header, and the SUV it gives must equal the demo's ground truth."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neuroadapt.bids import ingest, merge_sidecars
from neuroadapt.demo.pet_dicom import PetDicomHeader, write_pet_series
from neuroadapt.dicom import convert_dataset
from neuroadapt.errors import InputError
from neuroadapt.petct import suv
from neuroadapt.petct.frames import DEFAULT_WINDOW_S
from neuroadapt.petct.pipeline import load_static_pet

MAPPING = {
    "descriptions": [
        {
            "datatype": "pet",
            "suffix": "pet",
            "custom_entities": "trc-FDG",
            "criteria": {"Modality": "PT"},
        }
    ]
}
# A dynamic scan from 30 s after the injection to 60 min: short frames first.
DYNAMIC_STARTS = [0, 60, 120, 300, 600, 1200, 1800, 2400, 2970, 3270]
DYNAMIC_DURATIONS = [60, 60, 180, 300, 600, 600, 600, 570, 300, 300]
DYNAMIC_DELAY_S = 30.0


@pytest.fixture(scope="module")
def demo_pet(petct_cohort):
    """(image, sidecar, truth) of the demo's first PET."""
    bids, truth_dir = petct_cohort
    path = bids / "sub-001" / "pet" / "sub-001_trc-FDG_pet.nii.gz"
    sidecar = json.loads(path.with_name("sub-001_trc-FDG_pet.json").read_text())
    truth = json.loads((truth_dir / "sub-001_truth.json").read_text())
    return nib.load(path), sidecar, truth


@pytest.fixture(scope="module")
def converted(demo_pet, tmp_path_factory) -> tuple[Path, dict]:
    image, sidecar, truth = demo_pet
    activity = image.get_fdata()
    suv_truth = activity / truth["suv_to_bq_per_ml"]
    injection = dt.datetime.fromisoformat(f"2024-03-01T{sidecar['TimeZero']}")
    weight, injected_bq = sidecar["BodyWeight"], sidecar["InjectedRadioactivity"] * 1e6
    root = tmp_path_factory.mktemp("pet_dicom")
    static = PetDicomHeader(
        injection, injection + dt.timedelta(seconds=sidecar["ScanStart"]), injected_bq, weight
    )
    write_pet_series(
        activity, image.affine, static, root / "sub-01", frame_durations_s=sidecar["FrameDuration"]
    )
    # Dynamic: decay corrected to the series start; the frames in the uptake window hold the
    # true concentration, earlier frames a rising uptake curve.
    start = injection + dt.timedelta(seconds=DYNAMIC_DELAY_S)
    at_start = suv_truth * injected_bq * 2 ** (-DYNAMIC_DELAY_S / 6586.2) / (weight * 1000)
    middles = np.add(DYNAMIC_STARTS, np.divide(DYNAMIC_DURATIONS, 2)) + DYNAMIC_DELAY_S
    rise = [1.0 if m >= DEFAULT_WINDOW_S[0] else m / 4000 for m in middles]
    frames = np.stack([at_start * r for r in rise], axis=-1)
    dynamic = PetDicomHeader(injection, start, injected_bq, weight)
    write_pet_series(
        frames, image.affine, dynamic, root / "sub-02", DYNAMIC_STARTS, DYNAMIC_DURATIONS
    )
    mapping = root / "dcm2bids.json"
    mapping.write_text(json.dumps(MAPPING))
    bids = tmp_path_factory.mktemp("bids") / "bids"
    summary = convert_dataset(root, mapping, bids)
    return bids, summary


def _pet(bids: Path, participant: str) -> tuple[Path, dict]:
    path = bids / participant / "pet" / f"{participant}_trc-FDG_pet.nii.gz"
    return path, json.loads(path.with_name(f"{participant}_trc-FDG_pet.json").read_text())


def _suv(path: Path, sidecar: dict, window=DEFAULT_WINDOW_S):
    pet, frames = load_static_pet(str(path), sidecar, window, str(path))
    image = suv.to_suv(pet, suv.suv_factors(sidecar, path=path))
    from neuroadapt.petct.images import ras_affine, to_array

    return to_array(image), ras_affine(image), frames


def test_the_sidecar_gets_weight_injection_and_decay_time_from_the_dicom_header(
    converted, demo_pet
):
    bids, summary = converted
    _, original, _ = demo_pet
    _, sidecar = _pet(bids, "sub-01")
    assert sidecar["BodyWeight"] == pytest.approx(original["BodyWeight"], abs=0.05)
    assert sidecar["BodyWeightUnits"] == "kg"
    # dcm2niix's time zero is the acquisition start: the injection came ScanStart s before
    assert sidecar["InjectionStart"] == -original["ScanStart"]
    assert sidecar["ScanStart"] == 0 and sidecar["ImageDecayCorrectionTime"] == 0
    assert sidecar["InjectedRadioactivity"] == pytest.approx(original["InjectedRadioactivity"])
    assert sidecar["Units"] == "Bq/mL" and sidecar["TimeZero"]
    added = summary["subjects"][0]["pet_sidecars"]["sub-01/pet/sub-01_trc-FDG_pet.json"]
    assert added == {
        "added": ["BodyWeight", "BodyWeightUnits", "InjectionStart", "TimeZero"],
        "missing": [],
    }


def test_static_pet_from_dicom_gives_the_true_suv(converted, demo_pet):
    bids, _ = converted
    image, _, truth = demo_pet
    path, sidecar = _pet(bids, "sub-01")
    values, affine, frames = _suv(path, sidecar)
    assert frames is None
    canonical = nib.as_closest_canonical(image)  # the demo PET's voxel axes, RAS
    expected = canonical.get_fdata() / truth["suv_to_bq_per_ml"]
    np.testing.assert_allclose(
        nib.as_closest_canonical(nib.Nifti1Image(values, affine)).affine,
        canonical.affine,
        atol=1e-3,
    )
    got = nib.as_closest_canonical(nib.Nifti1Image(values, affine)).get_fdata()
    # 16-bit storage per slice: within 1e-4 of each slice's maximum
    assert np.abs(got - expected).max() < 1e-4 * expected.max()
    assert np.abs(got - expected).max() > 0  # the values did go through DICOM


def test_dynamic_pet_is_averaged_over_the_uptake_window_into_the_true_suv(converted, demo_pet):
    bids, _ = converted
    image, _, truth = demo_pet
    path, sidecar = _pet(bids, "sub-02")
    assert nib.load(path).shape[3] == 10
    assert sidecar["FrameTimesStart"] == DYNAMIC_STARTS
    assert sidecar["InjectionStart"] == -DYNAMIC_DELAY_S
    values, affine, frames = _suv(path, sidecar)
    assert frames.indices == (8, 9)  # midpoints 3150 s and 3450 s after the injection
    record = frames.as_sidecar()["StaticFromDynamic"]
    assert record["WindowAfterInjectionSeconds"] == [3000.0, 3600.0]
    expected = nib.as_closest_canonical(image).get_fdata() / truth["suv_to_bq_per_ml"]
    got = nib.as_closest_canonical(nib.Nifti1Image(values, affine)).get_fdata()
    assert np.abs(got - expected).max() < 2e-4 * expected.max()
    # an earlier window reads the uptake curve's lower values
    early, _, chosen = _suv(path, sidecar, window=(1500, 2700))
    assert chosen.indices == (5, 6)  # midpoints 1530 s and 2130 s
    assert early.max() < 0.7 * got.max()


def test_a_window_outside_the_frames_names_the_file_and_the_config_key(converted):
    path, sidecar = _pet(converted[0], "sub-02")
    with pytest.raises(
        InputError,
        match=r"has no frame in the window 4000-5000 s after the injection \(its frames cover "
        r"30-3600 s\)\. Fix: set petct.static_window_s .* e.g. \[3000, 3600\]",
    ):
        load_static_pet(str(path), sidecar, (4000, 5000), str(path))


def test_dynamic_pet_ingests_and_without_frame_times_is_named(converted, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(converted[0], bids)
    table = ingest(bids, required=["pet"]).table
    assert list(table.participant_id) == ["sub-01", "sub-02"]
    sidecar_path = bids / "sub-02" / "pet" / "sub-02_trc-FDG_pet.json"
    assert merge_sidecars(table.pet_sidecars[1].split(";"))["FrameDuration"] == DYNAMIC_DURATIONS
    sidecar = json.loads(sidecar_path.read_text())
    del sidecar["FrameTimesStart"]
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(
        InputError,
        match=r"sub-02_trc-FDG_pet.nii.gz: is a dynamic PET of 10 frames and its sidecar has no "
        r"FrameTimesStart",
    ):
        ingest(bids, required=["pet"], on_missing_modality="fail")
