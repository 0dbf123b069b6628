"""The synthetic head and neck PET/CT cohort and the CT pretraining cohort."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bids_validator import BIDSValidator
from conftest import SMALL_PETCT
from nibabel.affines import apply_affine
from scipy import ndimage
from scipy.stats import spearmanr

from neuroadapt.demo import head_neck
from neuroadapt.demo.ct_pretrain import (
    CtPretrainCohortSpec,
    generate_ct_pretrain_cohort,
)
from neuroadapt.demo.petct import (
    F18_HALF_LIFE_S,
    PetCtCohortSpec,
    draw_subject,
    draw_subjects,
    generate_petct_cohort,
)
from neuroadapt.errors import ConfigError
from neuroadapt.geometry import voxel_centres
from neuroadapt.spec import spec_from_mapping

SMALL_CT = dict(n_subjects=4, ct_shape=(84, 84, 40), ct_spacing_mm=(2.0, 2.0, 3.75))

PET_REQUIRED = (
    "Manufacturer",
    "ManufacturersModelName",
    "Units",
    "TracerName",
    "TracerRadionuclide",
    "InjectedRadioactivity",
    "InjectedRadioactivityUnits",
    "InjectedMass",
    "InjectedMassUnits",
    "SpecificRadioactivity",
    "SpecificRadioactivityUnits",
    "ModeOfAdministration",
    "TimeZero",
    "ScanStart",
    "InjectionStart",
    "FrameTimesStart",
    "FrameDuration",
    "AcquisitionMode",
    "ImageDecayCorrected",
    "ImageDecayCorrectionTime",
    "ReconMethodName",
    "ReconMethodParameterLabels",
    "ReconMethodParameterUnits",
    "ReconMethodParameterValues",
    "ReconFilterType",
    "ReconFilterSize",
    "AttenuationCorrection",
    "BodyWeight",
)
CT_FIELDS = (
    "Modality",
    "Manufacturer",
    "ManufacturersModelName",
    "InstitutionName",
    "KVP",
    "XRayExposure",
    "ExposureTime",
    "XRayTubeCurrent",
    "ConvolutionKernel",
    "SliceThickness",
    "ImageType",
    "ConversionSoftware",
    "BodyPart",
)


def _generate(factory, generator, spec, name):
    bids, truth = factory.mktemp(f"{name}_bids"), factory.mktemp(f"{name}_truth")
    generator(spec, bids, truth)
    return bids, truth


@pytest.fixture(scope="module")
def petct(petct_cohort):
    bids, truth = petct_cohort
    return PetCtCohortSpec(**SMALL_PETCT), bids, truth


@pytest.fixture(scope="module")
def ct_pretrain(tmp_path_factory):
    spec = CtPretrainCohortSpec(**SMALL_CT)
    bids, truth = _generate(tmp_path_factory, generate_ct_pretrain_cohort, spec, "ctp")
    return spec, bids, truth


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _ignored(relative: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(Path(relative).name, pattern) for pattern in patterns)


def _assert_bids_names(bids: Path) -> None:
    patterns = (bids / ".bidsignore").read_text().split()
    assert patterns == ["*_ct.nii.gz", "*_ct.json"]
    validator = BIDSValidator()
    files = [str(p.relative_to(bids)) for p in sorted(bids.rglob("*")) if p.is_file()]
    checked = [f for f in files if f != ".bidsignore" and not _ignored(f, patterns)]
    invalid = [f for f in checked if not validator.is_bids("/" + f)]
    assert not invalid
    assert any(f.endswith("_ct.nii.gz") for f in files)


# ---------------------------------------------------------------------------------------
# the phantom


def test_phantom_tissues_suv_and_gtv_truth():
    anatomy = head_neck.HeadNeckAnatomy.draw(np.random.default_rng(0), 75.0, node_probability=1)
    s = anatomy.head_scale
    points = np.array(
        [
            [0.0, 0.0, 400.0],  # far above the head
            [0.0, -5.0 * s, 80.0 * s],  # brain centre
            [0.0, 5.0 * s, -40.0 * s],  # airway (the tube runs forward as it descends)
            [0.0, -30.0 * s, 14.0 * s],  # inside a vertebral body
            anatomy.tumour[0].centre_mm,
            anatomy.nodes[0].centre_mm,
        ]
    )
    tissue = head_neck.labels(anatomy, points)
    expected = [head_neck.AIR, head_neck.BRAIN, head_neck.AIRWAY, head_neck.MARROW]
    assert list(tissue) == expected + [head_neck.TUMOUR, head_neck.NODE]
    np.testing.assert_allclose(head_neck.hounsfield(tissue)[:4], [-1000, 35, -1000, 400])
    values = head_neck.suv(anatomy, points, tissue)
    uptake = anatomy.uptake
    np.testing.assert_allclose(
        values, [0, uptake.brain, 0, uptake.marrow, uptake.tumour_peak, uptake.node_peak]
    )

    ellipsoid = head_neck.Ellipsoid((10.0, 0.0, 0.0), (10.0, 8.0, 6.0))
    single = head_neck.HeadNeckAnatomy(1.0, (58.0, 60.0), 8.0, (ellipsoid,), (), uptake)
    truth = head_neck.gtv_truth(single)
    assert truth.volume_ml == pytest.approx(ellipsoid.volume_ml, rel=0.01)
    np.testing.assert_allclose(truth.centroid_mm, ellipsoid.centre_mm, atol=0.05)
    # mean of 1 - 0.35 rho^2 over an ellipsoid is 1 - 0.35 * 3/5
    assert truth.suv_mean == pytest.approx(0.79 * uptake.tumour_peak, rel=0.01)
    no_lesion = head_neck.HeadNeckAnatomy.draw(np.random.default_rng(0), 75.0, lesion=False)
    assert head_neck.gtv_truth(no_lesion) is None


# ---------------------------------------------------------------------------------------
# demo_petct


def test_petct_bids_names_valid(petct):
    _, bids, _ = petct
    _assert_bids_names(bids)
    description = json.loads((bids / "derivatives/gtv/dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    for sub in ("sub-001", "sub-004"):
        assert (bids / sub / "ct" / f"{sub}_ct.nii.gz").is_file()
        assert (bids / sub / "pet" / f"{sub}_trc-FDG_pet.nii.gz").is_file()
        assert (bids / f"derivatives/gtv/{sub}/ct/{sub}_space-CT_label-GTV_mask.nii.gz").is_file()


def test_petct_sidecars_complete(petct):
    _, bids, _ = petct
    for sidecar in sorted(bids.glob("sub-*/pet/*_pet.json")):
        pet = json.loads(sidecar.read_text())
        assert set(PET_REQUIRED) <= set(pet), set(PET_REQUIRED) - set(pet)
        assert pet["Units"] == "Bq/mL" and pet["TracerRadionuclide"] == "F18"
        assert pet["ImageDecayCorrected"] is True
        assert pet["ImageDecayCorrectionTime"] == pet["ScanStart"]
        assert 2400 <= pet["ScanStart"] - pet["InjectionStart"] <= 4800
        assert 2.5 < pet["InjectedRadioactivity"] / pet["BodyWeight"] < 5.0
    for sidecar in sorted(bids.glob("sub-*/ct/*_ct.json")):
        ct = json.loads(sidecar.read_text())
        assert set(CT_FIELDS) <= set(ct) and ct["Modality"] == "CT"
        assert ct["BodyPart"] == "HEADNECK"


def test_petct_participants(petct):
    spec, bids, _ = petct
    table = pd.read_csv(bids / "participants.tsv", sep="\t")
    assert list(table.columns) == [
        "participant_id",
        "site",
        "age",
        "sex",
        "weight",
        "hpv_status",
        "survival_months",
        "event",
    ]
    assert list(table.site) == ["centreA", "centreB"] * 2
    assert set(table.hpv_status) <= {"positive", "negative"}
    assert set(table.event) <= {0, 1} and (table.survival_months > 0).all()
    described = json.loads((bids / "participants.json").read_text())
    assert set(described) == set(table.columns)


def test_petct_images_shapes_and_grids(petct):
    spec, bids, _ = petct
    orientations = set()
    for sub in ("sub-001", "sub-002"):
        ct = nib.load(bids / sub / "ct" / f"{sub}_ct.nii.gz")
        pet = nib.load(bids / sub / "pet" / f"{sub}_trc-FDG_pet.nii.gz")
        mask = nib.load(bids / f"derivatives/gtv/{sub}/ct/{sub}_space-CT_label-GTV_mask.nii.gz")
        assert ct.shape == spec.ct_shape and ct.get_data_dtype() == np.int16
        np.testing.assert_allclose(ct.header.get_zooms(), spec.ct_spacing_mm)
        hu = ct.get_fdata()
        assert hu.min() >= -1024 and 900 < hu.max() < 1400  # air to cortical bone
        assert mask.shape == ct.shape and mask.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1}
        np.testing.assert_array_equal(mask.affine, ct.affine)
        assert pet.shape == spec.pet_shape
        np.testing.assert_allclose(pet.header.get_zooms(), [spec.pet_voxel_mm] * 3)
        assert nib.aff2axcodes(ct.affine) == ("L", "A", "S")
        orientations.add(nib.aff2axcodes(pet.affine))
        assert pet.get_fdata().min() >= 0
    assert orientations == {("R", "A", "S"), ("L", "P", "S")}


def test_petct_deterministic_and_stable_when_cohort_grows(petct, tmp_path_factory):
    spec, bids, truth = petct
    bids2, truth2 = _generate(tmp_path_factory, generate_petct_cohort, spec, "petct_again")
    assert _hashes(bids) == _hashes(bids2)
    assert _hashes(truth) == _hashes(truth2)

    bigger = PetCtCohortSpec(**{**SMALL_PETCT, "n_subjects": 5})
    bids5, truth5 = _generate(tmp_path_factory, generate_petct_cohort, bigger, "petct5")
    first = {k: v for k, v in _hashes(bids).items() if "sub-001" in k}
    assert len(first) == 5  # CT + json, PET + json, mask
    assert first == {k: v for k, v in _hashes(bids5).items() if "sub-001" in k}
    truth_file = "sub-001_truth.json"
    assert (truth / truth_file).read_bytes() == (truth5 / truth_file).read_bytes()


def _pet_suv(bids: Path, sub: str) -> tuple[np.ndarray, np.ndarray]:
    """SUV_bw image from the PET and its sidecar (the formula a user applies) + affine."""
    image = nib.load(bids / sub / "pet" / f"{sub}_trc-FDG_pet.nii.gz")
    side = json.loads((bids / sub / "pet" / f"{sub}_trc-FDG_pet.json").read_text())
    elapsed = side["ScanStart"] - side["InjectionStart"]
    activity_bq = side["InjectedRadioactivity"] * 1e6 * 2.0 ** (-elapsed / F18_HALF_LIFE_S)
    return image.get_fdata() / (activity_bq / (side["BodyWeight"] * 1000.0)), image.affine


def _pet_tissue(spec, index: int, truth: dict, shape, affine) -> np.ndarray:
    """Phantom tissue codes at the PET voxel centres, through the true geometry."""
    anatomy = draw_subject(spec, index).anatomy
    to_patient = np.linalg.inv(truth["patient_to_ct"]) @ np.array(truth["pet_to_ct"])
    points = apply_affine(to_patient, voxel_centres(shape, affine))
    return head_neck.labels(anatomy, points).reshape(shape)


def _tumour_blob(suv: np.ndarray, affine: np.ndarray, near_mm, brain: np.ndarray):
    """Boolean mask of the hottest blob (>= 45% of its peak, smoothed) within 40 mm of
    ``near_mm`` (PET world), away from the brain (often hotter than the tumour)."""
    centres = voxel_centres(suv.shape, affine).reshape(*suv.shape, 3)
    window = np.linalg.norm(centres - np.asarray(near_mm), axis=-1) <= 40.0
    window &= ~ndimage.binary_dilation(brain, iterations=3)
    smooth = np.where(window, ndimage.gaussian_filter(suv, 1.0), 0.0)
    peak = np.unravel_index(np.argmax(smooth), suv.shape)
    components, _ = ndimage.label(smooth >= 0.45 * smooth[peak])
    return components == components[peak]


def test_petct_known_transform_maps_pet_tumour_onto_ct_gtv(petct):
    spec, bids, truth_dir = petct
    for index in range(spec.n_subjects):
        sub = f"sub-{index + 1:03d}"
        truth = json.loads((truth_dir / f"{sub}_truth.json").read_text())
        pet_to_ct = np.array(truth["pet_to_ct"])
        assert truth["rotation_deg"] <= spec.max_rotation_deg
        assert np.linalg.norm(truth["translation_mm"]) <= spec.max_translation_mm

        mask = nib.load(bids / f"derivatives/gtv/{sub}/ct/{sub}_space-CT_label-GTV_mask.nii.gz")
        voxels = np.argwhere(np.asarray(mask.dataobj) > 0)
        gtv_ct = apply_affine(mask.affine, voxels.mean(axis=0))
        # the CT world position and size of the GTV are the truth's
        np.testing.assert_allclose(gtv_ct, truth["gtv_centroid_ct_mm"], atol=1.0)
        volume_ml = len(voxels) * np.prod(mask.header.get_zooms()) / 1000.0
        assert volume_ml == pytest.approx(truth["gtv_volume_ml"], rel=0.08)

        suv, affine = _pet_suv(bids, sub)
        brain = _pet_tissue(spec, index, truth, suv.shape, affine) == head_neck.BRAIN
        blob = _tumour_blob(suv, affine, truth["gtv_centroid_pet_mm"], brain)
        weights = suv[blob]
        centroid_ijk = (np.argwhere(blob) * weights[:, None]).sum(axis=0) / weights.sum()
        centroid_pet = apply_affine(affine, centroid_ijk)
        landed = apply_affine(pet_to_ct, centroid_pet)
        assert np.linalg.norm(landed - gtv_ct) < spec.pet_voxel_mm
        # without the transform the PET tumour would be elsewhere (the test has teeth)
        if np.linalg.norm(truth["translation_mm"]) > 2 * spec.pet_voxel_mm:
            assert np.linalg.norm(centroid_pet - gtv_ct) > spec.pet_voxel_mm


def test_petct_suv_round_trip(petct):
    spec, bids, truth_dir = petct
    for index in range(spec.n_subjects):
        sub = f"sub-{index + 1:03d}"
        truth = json.loads((truth_dir / f"{sub}_truth.json").read_text())
        suv, affine = _pet_suv(bids, sub)
        # brain: large and uniform, so PSF and noise average out in its core
        brain = _pet_tissue(spec, index, truth, suv.shape, affine) == head_neck.BRAIN
        core = ndimage.binary_erosion(brain, iterations=3)
        assert core.sum() > 200
        assert suv[core].mean() == pytest.approx(truth["uptake"]["brain"], rel=0.03)
        # tumour: partial volume lowers the measured SUVmax, noise may raise it a little
        blob = _tumour_blob(suv, affine, truth["gtv_centroid_pet_mm"], brain)
        assert 0.4 * truth["tumour_suv_max"] < suv[blob].max() < 1.3 * truth["tumour_suv_max"]
        assert 5.0 <= truth["tumour_suv_max"] <= 15.0
        assert truth["tumour_suv_mean"] < truth["tumour_suv_max"]


def test_survival_depends_on_tumour_burden():
    for n_subjects in (24, 60):
        subjects = draw_subjects(PetCtCohortSpec(n_subjects=n_subjects))
        events = [s for s in subjects if s.event]
        assert 0 < len(events) < n_subjects
        rho, _ = spearmanr([s.gtv.volume_ml for s in events], [s.survival_months for s in events])
        assert rho < -0.2


def test_petct_spec_errors():
    where = "datasets.demo_petct.synthetic"
    with pytest.raises(ConfigError) as error:
        spec_from_mapping(PetCtCohortSpec, {"n_subject": 3}, where)
    assert error.value.key == f"{where}.n_subject"
    with pytest.raises(ConfigError) as error:
        spec_from_mapping(PetCtCohortSpec, {"n_subjects": 3}, where)
    assert error.value.key == f"{where}.n_subjects"
    with pytest.raises(ConfigError) as error:
        spec_from_mapping(PetCtCohortSpec, {"ct_spacing_mm": [1.5, 0.0, 3.0]}, where)
    assert error.value.key == f"{where}.ct_spacing_mm"
    with pytest.raises(ConfigError) as error:
        spec_from_mapping(PetCtCohortSpec, {"pet_voxel_mm": -4}, where)
    assert error.value.key == f"{where}.pet_voxel_mm"
    with pytest.raises(ConfigError) as error:
        spec_from_mapping(PetCtCohortSpec, {"max_rotation_deg": "large"}, where)
    assert error.value.key == f"{where}.max_rotation_deg"
    spec = spec_from_mapping(PetCtCohortSpec, {"pet_shape": [40, 40, 40], "seed": 1}, where)
    assert spec.pet_shape == (40, 40, 40) and spec.pet_voxel_mm == 4.0


# ---------------------------------------------------------------------------------------
# demo_ct_pretrain


def test_ct_pretrain_names_and_lesion_balance(ct_pretrain, petct):
    spec, bids, truth = ct_pretrain
    _assert_bids_names(bids)
    table = pd.read_csv(bids / "participants.tsv", sep="\t")
    assert list(table.columns) == ["participant_id", "site", "age", "sex", "lesion"]
    assert list(table.participant_id) == [f"sub-ctp{i:03d}" for i in range(1, 5)]
    petct_ids = pd.read_csv(petct[1] / "participants.tsv", sep="\t").participant_id
    assert not set(table.participant_id) & set(petct_ids)
    assert table.lesion.sum() == len(table) // 2
    assert (table.groupby("site").lesion.nunique() == 2).all()
    for row in table.itertuples():
        sub = row.participant_id
        mask = nib.load(bids / f"derivatives/gtv/{sub}/ct/{sub}_space-CT_label-GTV_mask.nii.gz")
        assert bool(np.asarray(mask.dataobj).any()) == bool(row.lesion)
        assert nib.load(bids / sub / "ct" / f"{sub}_ct.nii.gz").shape == spec.ct_shape
    default = CtPretrainCohortSpec()
    assert default.n_subjects == 16 and default.seed != PetCtCohortSpec().seed


def test_ct_pretrain_deterministic(ct_pretrain, tmp_path_factory):
    spec, bids, truth = ct_pretrain
    bids2, truth2 = _generate(tmp_path_factory, generate_ct_pretrain_cohort, spec, "ctp_again")
    assert _hashes(bids) == _hashes(bids2)
    assert _hashes(truth) == _hashes(truth2)


def test_ct_pretrain_spec_errors():
    where = "datasets.demo_ct_pretrain.synthetic"
    with pytest.raises(ConfigError) as error:
        spec_from_mapping(CtPretrainCohortSpec, {"n_subject": 3}, where)
    assert error.value.key == f"{where}.n_subject"
    with pytest.raises(ConfigError) as error:
        spec_from_mapping(CtPretrainCohortSpec, {"n_subjects": 3}, where)
    assert error.value.key == f"{where}.n_subjects"
    with pytest.raises(ConfigError) as error:
        spec_from_mapping(CtPretrainCohortSpec, {"ct_shape": [8, 64, 64]}, where)
    assert error.value.key == f"{where}.ct_shape"
