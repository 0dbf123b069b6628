"""The ``demo_petct`` synthetic cohort: head and neck cancer, FDG PET/CT, two centres.

Per subject: a CT (HU, anisotropic voxels) and a static FDG PET (Bq/mL, coarse voxels,
Gaussian PSF, correlated noise), both sampled from the analytic phantom of
:mod:`neuroadapt.demo.head_neck`, plus a manual-style GTV mask on the CT grid and clinical
data with survival. Layout of ``bids_dir``::

    dataset_description.json  README  CHANGES  .bidsignore
    participants.tsv  participants.json
    sub-<id>/ct/sub-<id>_ct.nii.gz (+ .json)               CT, not (yet) BIDS: .bidsignore'd
    sub-<id>/pet/sub-<id>_trc-FDG_pet.nii.gz (+ .json)     static PET, BIDS PET sidecar
    derivatives/gtv/dataset_description.json
    derivatives/gtv/sub-<id>/ct/sub-<id>_space-CT_label-GTV_mask.nii.gz   uint8 0/1, CT grid

CT is a convention of this project (BIDS has no CT datatype; BEP024 is a draft): folder
``ct``, suffix ``_ct``, sidecar with the fields dcm2niix writes for CT.

Geometry. Three frames, all in mm with RAS+ axes: the patient frame of the phantom, CT
world and PET world. ``patient_to_ct`` (4x4) places the patient in the CT scanner (set-up
jitter and a per-centre couch offset). The patient then moves before the PET: ``pet_to_ct``
(4x4) maps a point given in PET world coordinates to the CT world coordinates of the same
anatomical point, ``x_ct = pet_to_ct @ x_pet`` (homogeneous). It is a rotation by
``rotation_deg`` about the unit ``rotation_axis`` through ``rotation_centre_mm`` (the CT
field-of-view centre) followed by a translation ``translation_mm``:
``x_ct = R (x_pet - c) + c + t``. So a PET voxel ``ijk`` shows the phantom at patient point
``inv(patient_to_ct) @ pet_to_ct @ pet_affine @ ijk``, which is how the PET is sampled.
The grids also differ: CT voxel axes are LAS-ordered (as dcm2niix writes), PET voxel axes
RAS at centreA and LPS at centreB, with their own origin and voxel size.

PET values. The image holds activity concentration C in Bq/mL, decay corrected to the
scan start (``ImageDecayCorrected`` true, ``ImageDecayCorrectionTime`` = ``ScanStart``;
TimeZero is the injection, ``InjectionStart`` 0). With F-18 half-life T = 6586.2 s,
``dt = ScanStart - InjectionStart`` (s), injected activity A (``InjectedRadioactivity``, MBq)
and body weight W (``BodyWeight``, kg)::

    SUV_bw = C / (A * 1e6 * 2**(-dt / T) / (W * 1000))

Survival. Weibull proportional hazards (shape 1.3, median 36 months for the reference
patient) with log hazard ratio ``0.9 log(GTV/10 mL) - 0.9 [HPV+] + 0.25 (age-60)/10``;
administrative censoring (accrual over 48 months, analysis at 72 months). Larger tumours
progress sooner, so a model can learn survival from the images.

Ground truth goes to ``truth_dir`` (never read by the pipeline): ``sub-<id>_truth.json``
per subject and ``truth.tsv``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from nibabel.affines import apply_affine
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from neuroadapt.demo import head_neck
from neuroadapt.demo.bidsio import (
    SEX,
    bids_path,
    subject_label,
    subject_rng,
    write_derivative_description,
    write_json,
    write_nifti,
    write_raw_dataset,
    write_tsv,
)
from neuroadapt.errors import ConfigError
from neuroadapt.geometry import rigid_matrix, voxel_centres

F18_HALF_LIFE_S = 6586.2
FDG_MOLECULAR_WEIGHT = 181.26  # g/mol
_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_BIDSIGNORE = "*_ct.nii.gz\n*_ct.json\n"

# Per-centre scanners. ``ct_scale`` is the (slope, intercept) the CT is stored with (None:
# plain int16 HU); ``ct_sigma_vox`` the in-plane/through-plane blur of the reconstruction
# kernel; ``pet_axes`` the signs of the PET voxel axes in world (RAS) terms.
CENTRES = (
    {
        "name": "centreA",
        "InstitutionName": "Centre A University Hospital",
        "Manufacturer": "Siemens",
        "ManufacturersModelName": "Biograph Vision 600",
        "SoftwareVersions": "VG80B",
        "ConvolutionKernel": "Br38f",
        "KVP": 120,
        "ReconMethodName": "OSEM3D TOF PSF",
        "ReconMethodParameterValues": [5, 4],
        "ReconFilterSize": 4.0,
        "couch_mm": (0.0, 150.0, -620.0),
        "ct_scale": (1.0, -1024.0),
        "ct_noise": 1.0,
        "ct_sigma_vox": (0.6, 0.6, 0.3),
        "pet_axes": (1.0, 1.0, 1.0),
    },
    {
        "name": "centreB",
        "InstitutionName": "Centre B Cancer Institute",
        "Manufacturer": "GE MEDICAL SYSTEMS",
        "ManufacturersModelName": "Discovery MI",
        "SoftwareVersions": "pet_coreload.46.20",
        "ConvolutionKernel": "STANDARD",
        "KVP": 120,
        "ReconMethodName": "VPFX-S (OSEM TOF PSF)",
        "ReconMethodParameterValues": [16, 3],
        "ReconFilterSize": 5.0,
        "couch_mm": (0.0, 120.0, 85.0),
        "ct_scale": None,
        "ct_noise": 1.4,
        "ct_sigma_vox": (0.4, 0.4, 0.2),
        "pet_axes": (-1.0, -1.0, 1.0),
    },
)


@dataclass(frozen=True)
class PetCtCohortSpec:
    """Parameters of the synthetic PET/CT cohort (defaults: the demo).

    Sizes: ``ct_shape`` voxels at ``ct_spacing_mm`` (x, y, z), ``pet_shape`` voxels of
    ``pet_voxel_mm`` (isotropic). ``pet_fwhm_mm`` is the PET resolution (Gaussian PSF),
    ``pet_noise`` the noise standard deviation relative to the signal at SUV 1 (it scales
    with sqrt(SUV)), ``ct_noise_hu`` the CT noise (HU, before the centre's factor).
    ``max_rotation_deg`` / ``max_translation_mm`` bound the PET-to-CT misalignment.
    """

    n_subjects: int = 24
    n_sites: int = 2
    seed: int = 20261123
    ct_shape: tuple[int, int, int] = (112, 112, 50)
    ct_spacing_mm: tuple[float, float, float] = (1.5, 1.5, 3.0)
    pet_shape: tuple[int, int, int] = (48, 48, 46)
    pet_voxel_mm: float = 4.0
    pet_fwhm_mm: float = 6.0
    pet_noise: float = 0.15
    pet_supersample: int = 2
    ct_noise_hu: float = 12.0
    max_rotation_deg: float = 8.0
    max_translation_mm: float = 15.0
    activity_mbq_per_kg: float = 3.7
    uptake_s: float = 3600.0
    uptake_jitter_s: float = 600.0
    node_probability: float = 0.5
    tumour_volume_ml: float = 12.0
    hpv_positive_fraction: float = 0.55

    def check(self, where: str) -> None:
        """Raise ConfigError for values no cohort can be generated from."""
        if not 1 <= self.n_sites <= len(CENTRES):
            raise ConfigError(
                f"{where}.n_sites", f"must lie between 1 and {len(CENTRES)}", "set n_sites: 2"
            )
        if self.n_subjects < 2 * self.n_sites:
            raise ConfigError(
                f"{where}.n_subjects",
                f"{self.n_subjects} subjects cannot give each of {self.n_sites} centres two",
                f"set n_subjects to at least {2 * self.n_sites}",
            )
        check_grid_shape(where, "ct_shape", self.ct_shape)
        check_grid_shape(where, "pet_shape", self.pet_shape)
        check_positive(where, "ct_spacing_mm", self.ct_spacing_mm, "give e.g. [1.5, 1.5, 3.0]")
        for name in ("pet_voxel_mm", "activity_mbq_per_kg", "uptake_s", "tumour_volume_ml"):
            check_positive(where, name, (getattr(self, name),), "give a positive number")
        for name in ("pet_fwhm_mm", "pet_noise", "ct_noise_hu", "max_translation_mm"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}", "cannot be negative", "give 0 or more")
        if self.pet_supersample < 1:
            raise ConfigError(f"{where}.pet_supersample", "must be at least 1", "set 1 or 2")
        if not 0 <= self.max_rotation_deg <= 45:
            raise ConfigError(
                f"{where}.max_rotation_deg", "must lie in [0, 45] degrees", "use e.g. 8"
            )
        if not 0 <= self.uptake_jitter_s < self.uptake_s:
            raise ConfigError(
                f"{where}.uptake_jitter_s",
                "must be at least 0 and below uptake_s (the scan must follow the injection)",
                "use e.g. 600",
            )
        for name in ("node_probability", "hpv_positive_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{where}.{name}", "must lie in [0, 1]", "give a probability")


def check_grid_shape(where: str, name: str, shape: tuple) -> None:
    if len(shape) != 3 or any(not isinstance(n, int) or n < 16 for n in shape):
        raise ConfigError(
            f"{where}.{name}",
            f"{shape} is not 3 sizes of at least 16 voxels",
            "give e.g. [48, 48, 46]",
        )


def check_positive(where: str, name: str, values: tuple, fix: str) -> None:
    if len(values) not in (1, 3) or any(not v > 0 for v in values):
        raise ConfigError(f"{where}.{name}", f"{values} must be positive", fix)


# ---------------------------------------------------------------------------------------
# Subjects: demographics, anatomy, survival (no images: cheap, used by tests too)


@dataclass(frozen=True)
class PetCtSubject:
    """Everything drawn for one subject before imaging."""

    index: int
    label: str
    site: int
    age: float
    sex: str
    weight_kg: float
    hpv_positive: bool
    anatomy: head_neck.HeadNeckAnatomy
    gtv: head_neck.GtvTruth
    survival_months: float
    event: int
    log_hazard_ratio: float


def draw_subject(spec: PetCtCohortSpec, index: int) -> PetCtSubject:
    """Subject ``index``: independent of ``n_subjects`` except for the label's width."""
    rng = subject_rng(spec.seed, index, 0)
    male = rng.random() < 0.8  # head and neck cancer is mostly male
    weight = float(np.clip(rng.normal(80.0 if male else 66.0, 13.0), 42.0, 140.0))
    age = float(np.clip(rng.normal(62.0, 9.0), 35.0, 88.0))
    hpv = bool(rng.random() < spec.hpv_positive_fraction)
    anatomy = head_neck.HeadNeckAnatomy.draw(
        subject_rng(spec.seed, index, 1),
        weight,
        node_probability=spec.node_probability,
        tumour_volume_ml=(spec.tumour_volume_ml, 0.8),
    )
    gtv = head_neck.gtv_truth(anatomy)
    log_hr = 0.9 * np.log(gtv.volume_ml / 10.0) - 0.9 * hpv + 0.25 * (age - 60.0) / 10.0
    months, event = _draw_survival(float(log_hr), subject_rng(spec.seed, index, 2))
    return PetCtSubject(
        index=index,
        label=subject_label(index, spec.n_subjects),
        site=index % spec.n_sites,
        age=round(age, 1),
        sex="M" if male else "F",
        weight_kg=round(weight, 1),
        hpv_positive=hpv,
        anatomy=anatomy,
        gtv=gtv,
        survival_months=months,
        event=event,
        log_hazard_ratio=float(log_hr),
    )


def _draw_survival(log_hr: float, rng: np.random.Generator) -> tuple[float, int]:
    """Weibull PH event time (months) with administrative censoring; (time, event)."""
    shape, median = 1.3, 36.0
    scale = median / np.log(2.0) ** (1.0 / shape)
    event_time = scale * (-np.log(rng.random()) / np.exp(log_hr)) ** (1.0 / shape)
    follow_up = 72.0 - rng.uniform(0.0, 48.0)  # enrolled during 4 years, analysed at year 6
    event = int(event_time <= follow_up)
    return round(float(min(event_time, follow_up)), 1), event


def draw_subjects(spec: PetCtCohortSpec) -> list[PetCtSubject]:
    return [draw_subject(spec, index) for index in range(spec.n_subjects)]


def participants_table(subjects: list[PetCtSubject]) -> pd.DataFrame:
    """The ``participants.tsv`` columns, one row per subject."""
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{s.label}" for s in subjects],
            "site": [CENTRES[s.site]["name"] for s in subjects],
            "age": [s.age for s in subjects],
            "sex": [s.sex for s in subjects],
            "weight": [s.weight_kg for s in subjects],
            "hpv_status": ["positive" if s.hpv_positive else "negative" for s in subjects],
            "survival_months": [s.survival_months for s in subjects],
            "event": [s.event for s in subjects],
        }
    )


# ---------------------------------------------------------------------------------------
# Geometry


def grid_affine(shape, spacing_mm, axis_signs, centre_mm) -> np.ndarray:
    """4x4 voxel-to-world affine of an axis-aligned grid whose centre is at ``centre_mm``.

    ``axis_signs`` (3,) gives each voxel axis's direction in world RAS terms, e.g.
    (-1, 1, 1) for LAS ordering.
    """
    linear = np.diag(np.asarray(axis_signs, float) * np.asarray(spacing_mm, float))
    origin = np.asarray(centre_mm, float) - linear @ ((np.asarray(shape) - 1) / 2.0)
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = linear, origin
    return affine


@dataclass(frozen=True)
class CtPose:
    """Where the patient lies in the CT scanner and the CT grid (mm, 4x4 matrices)."""

    patient_to_ct: np.ndarray
    ct_affine: np.ndarray
    fov_centre_mm: np.ndarray


def draw_ct_pose(shape, spacing_mm, centre: dict, rng: np.random.Generator) -> CtPose:
    """Set-up jitter (rotation ~1.5 deg, shift ~5 mm) on top of the centre's couch offset;
    the CT field of view is centred on the planned position. LAS voxel order."""
    couch = np.asarray(centre["couch_mm"])
    fov_centre = couch + np.array([0.0, -5.0, -5.0])
    patient_to_ct = rigid_matrix(rng.normal(0.0, 1.5, 3), couch + rng.normal(0.0, [4, 4, 6]))
    affine = grid_affine(shape, spacing_mm, (-1.0, 1.0, 1.0), fov_centre)
    return CtPose(patient_to_ct, affine, fov_centre)


@dataclass(frozen=True)
class Misalignment:
    """PET-to-CT rigid transform (see the module docstring for the convention)."""

    rotation_deg: float
    rotation_axis: tuple[float, float, float]
    rotation_centre_mm: tuple[float, float, float]
    translation_mm: tuple[float, float, float]

    @property
    def pet_to_ct(self) -> np.ndarray:
        """4x4: PET world mm -> CT world mm of the same anatomical point."""
        axis = np.asarray(self.rotation_axis)
        rotation = Rotation.from_rotvec(np.deg2rad(self.rotation_deg) * axis).as_matrix()
        centre = np.asarray(self.rotation_centre_mm)
        matrix = np.eye(4)
        matrix[:3, :3] = rotation
        matrix[:3, 3] = centre - rotation @ centre + np.asarray(self.translation_mm)
        return matrix


def draw_misalignment(spec: PetCtCohortSpec, centre_mm, rng: np.random.Generator) -> Misalignment:
    """Random axis, angle uniform in [0, max], translation uniform in length up to max in a
    random direction."""
    axis = rng.normal(size=3)
    direction = rng.normal(size=3)
    angle = rng.uniform(0.0, spec.max_rotation_deg)
    length = rng.uniform(0.0, spec.max_translation_mm)
    return Misalignment(
        rotation_deg=float(angle),
        rotation_axis=tuple(float(v) for v in axis / np.linalg.norm(axis)),
        rotation_centre_mm=tuple(float(v) for v in centre_mm),
        translation_mm=tuple(float(v) for v in direction / np.linalg.norm(direction) * length),
    )


# ---------------------------------------------------------------------------------------
# Images


def render_ct(
    anatomy: head_neck.HeadNeckAnatomy,
    pose: CtPose,
    shape,
    centre: dict,
    noise_hu: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """CT in HU (float32, ``shape``) and the GTV mask (uint8 0/1) on the CT grid.

    Tissue HU at voxel centres, blurred by the reconstruction kernel, plus Gaussian noise
    of ``noise_hu`` times the centre's factor, clipped below at -1024 HU.
    """
    points = apply_affine(np.linalg.inv(pose.patient_to_ct), voxel_centres(shape, pose.ct_affine))
    tissue = head_neck.labels(anatomy, points).reshape(shape)
    hu = gaussian_filter(head_neck.hounsfield(tissue), centre["ct_sigma_vox"], mode="nearest")
    hu += rng.normal(0.0, noise_hu * centre["ct_noise"], shape).astype(np.float32)
    np.clip(hu, -1024.0, None, out=hu)  # scanners clip air at -1024 HU
    mask = np.isin(tissue, (head_neck.TUMOUR, head_neck.NODE)).astype(np.uint8)
    return hu, mask


def render_pet_suv(
    anatomy: head_neck.HeadNeckAnatomy,
    world_to_patient: np.ndarray,
    affine: np.ndarray,
    spec: PetCtCohortSpec,
    rng: np.random.Generator,
) -> np.ndarray:
    """PET image in SUV (float32, ``spec.pet_shape``) on the grid ``affine``.

    Partial volume: mean over ``pet_supersample``^3 sub-voxel points; resolution: Gaussian
    of ``pet_fwhm_mm``; noise: spatially correlated Gaussian, standard deviation
    ``pet_noise * sqrt(SUV)``; clipped at 0 as reconstructions are.
    """
    shape, sub = spec.pet_shape, spec.pet_supersample
    points = apply_affine(world_to_patient, voxel_centres(shape, affine, supersample=sub))
    tissue = head_neck.labels(anatomy, points)
    values = head_neck.suv(anatomy, points, tissue).reshape(*shape, sub**3).mean(axis=-1)
    sigma_vox = spec.pet_fwhm_mm * _FWHM_TO_SIGMA / spec.pet_voxel_mm
    values = gaussian_filter(values, sigma_vox, mode="nearest")
    noise = _correlated_noise(shape, 0.6, rng)
    values = values + spec.pet_noise * np.sqrt(np.clip(values, 0.0, None)) * noise
    return np.clip(values, 0.0, None).astype(np.float32)


def _correlated_noise(shape, sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian noise smoothed by a Gaussian of ``sigma_vox`` voxels."""
    noise = gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="wrap")
    impulse = np.zeros((15, 15, 15))
    impulse[7, 7, 7] = 1.0
    kernel = gaussian_filter(impulse, sigma_vox, mode="constant")
    return noise / np.sqrt(np.sum(kernel**2))


@dataclass(frozen=True)
class PetAcquisition:
    """Injection and timing of one PET scan: activity in MBq, times in s after injection."""

    injected_mbq: float
    scan_start_s: float
    frame_duration_s: float
    specific_mbq_per_ug: float
    injection_clock: str

    @property
    def decay_factor(self) -> float:
        """Fraction of the injected F-18 left at scan start."""
        return float(2.0 ** (-self.scan_start_s / F18_HALF_LIFE_S))

    def suv_to_bq_per_ml(self, weight_kg: float) -> float:
        """Multiply SUV_bw by this to get Bq/mL at scan start."""
        return self.injected_mbq * 1e6 * self.decay_factor / (weight_kg * 1000.0)


def draw_acquisition(spec: PetCtCohortSpec, weight_kg: float, rng) -> PetAcquisition:
    minutes = int(rng.integers(8 * 60, 14 * 60))
    return PetAcquisition(
        injected_mbq=round(float(spec.activity_mbq_per_kg * weight_kg * rng.normal(1.0, 0.06)), 1),
        scan_start_s=float(round(spec.uptake_s + rng.uniform(-1, 1) * spec.uptake_jitter_s)),
        frame_duration_s=float(rng.choice([240.0, 300.0, 360.0])),
        specific_mbq_per_ug=round(float(rng.uniform(150.0, 600.0)), 1),
        injection_clock=f"{minutes // 60:02d}:{minutes % 60:02d}:{int(rng.integers(60)):02d}",
    )


# ---------------------------------------------------------------------------------------
# Sidecars


def ct_sidecar(centre: dict, spacing_mm, rng: np.random.Generator) -> dict:
    """CT sidecar with the fields dcm2niix writes (times in s, current in mA, mAs)."""
    current = int(rng.integers(90, 220))  # tube current modulation differs per patient
    exposure_time = 0.5 if centre["Manufacturer"] == "Siemens" else 0.8
    return {
        "Modality": "CT",
        "Manufacturer": centre["Manufacturer"],
        "ManufacturersModelName": centre["ManufacturersModelName"],
        "SoftwareVersions": centre["SoftwareVersions"],
        "InstitutionName": centre["InstitutionName"],
        "BodyPart": "HEADNECK",
        "PatientPosition": "HFS",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL", "CT_SOURCE"],
        "KVP": centre["KVP"],
        "XRayTubeCurrent": current,
        "ExposureTime": exposure_time,
        "XRayExposure": round(current * exposure_time),
        "ConvolutionKernel": centre["ConvolutionKernel"],
        "SliceThickness": float(spacing_mm[2]),
        "ReconstructionDiameter": 500.0,
        "SpiralPitchFactor": 0.8,
        "ConversionSoftware": "dcm2niix",
        "ConversionSoftwareVersion": "v1.0.20240202",
    }


def pet_sidecar(
    centre: dict, acquisition: PetAcquisition, weight_kg: float, spec: PetCtCohortSpec
) -> dict:
    """BIDS PET sidecar (required fields plus BodyWeight and a few recommended ones)."""
    return {
        "Modality": "PT",
        "Manufacturer": centre["Manufacturer"],
        "ManufacturersModelName": centre["ManufacturersModelName"],
        "SoftwareVersions": centre["SoftwareVersions"],
        "InstitutionName": centre["InstitutionName"],
        "BodyPart": "HEADNECK",
        "Units": "Bq/mL",
        "TracerName": "FDG",
        "TracerRadionuclide": "F18",
        "TracerMolecularWeight": FDG_MOLECULAR_WEIGHT,
        "TracerMolecularWeightUnits": "g/mol",
        "InjectedRadioactivity": acquisition.injected_mbq,
        "InjectedRadioactivityUnits": "MBq",
        "InjectedMass": round(acquisition.injected_mbq / acquisition.specific_mbq_per_ug, 4),
        "InjectedMassUnits": "ug",
        "SpecificRadioactivity": acquisition.specific_mbq_per_ug,
        "SpecificRadioactivityUnits": "MBq/ug",
        "ModeOfAdministration": "bolus",
        "BodyWeight": weight_kg,
        "BodyWeightUnits": "kg",
        "TimeZero": acquisition.injection_clock,
        "InjectionStart": 0,
        "ScanStart": acquisition.scan_start_s,
        # BIDS: frame start times are relative to TimeZero (here the injection)
        "FrameTimesStart": [acquisition.scan_start_s],
        "FrameDuration": [acquisition.frame_duration_s],
        "AcquisitionMode": "list mode",
        "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": acquisition.scan_start_s,
        "ReconMethodName": centre["ReconMethodName"],
        "ReconMethodParameterLabels": ["subsets", "iterations"],
        "ReconMethodParameterUnits": ["none", "none"],
        "ReconMethodParameterValues": centre["ReconMethodParameterValues"],
        "ReconFilterType": "Gaussian",
        "ReconFilterSize": centre["ReconFilterSize"],
        "AttenuationCorrection": "CT-based attenuation correction",
        "ImageDescription": (
            "Static FDG PET in Bq/mL decay corrected to ScanStart; effective resolution "
            f"{spec.pet_fwhm_mm} mm FWHM (synthetic)"
        ),
    }


# ---------------------------------------------------------------------------------------
# Writing


def write_ct_files(bids_dir: Path, label: str, hu: np.ndarray, mask, affine, centre, sidecar):
    """CT image (int16, stored as the centre stores it), sidecar and derivatives GTV mask."""
    ct = bids_path(label, "ct", "ct", ".nii.gz")
    write_nifti(bids_dir / ct, hu, affine, np.int16, slope_inter=centre["ct_scale"] or (1.0, 0.0))
    write_json(bids_dir / ct.with_name(ct.name.replace(".nii.gz", ".json")), sidecar)
    gtv = bids_path(label, "ct", "mask", ".nii.gz", space="CT", label="GTV")
    write_nifti(bids_dir / "derivatives" / "gtv" / gtv, mask, affine, np.uint8)


def write_ct_dataset_files(bids_dir: Path, gtv_description: str) -> None:
    """``.bidsignore`` for the CT convention and the GTV derivatives description."""
    (bids_dir / ".bidsignore").write_text(_BIDSIGNORE)
    write_derivative_description(bids_dir / "derivatives" / "gtv", gtv_description)


def generate_petct_cohort(spec: PetCtCohortSpec, bids_dir: Path, truth_dir: Path) -> None:
    """Write the cohort as a raw BIDS dataset into ``bids_dir`` and its ground truth into
    ``truth_dir`` (both existing, empty folders). Same spec, same bytes."""
    bids_dir, truth_dir = Path(bids_dir), Path(truth_dir)
    subjects = draw_subjects(spec)
    _write_dataset_files(spec, bids_dir, participants_table(subjects))
    rows = [_write_subject(spec, bids_dir, truth_dir, subject) for subject in subjects]
    write_tsv(truth_dir / "truth.tsv", pd.DataFrame(rows))


def _write_subject(spec, bids_dir: Path, truth_dir: Path, subject: PetCtSubject) -> dict:
    centre = CENTRES[subject.site]
    geometry_rng = subject_rng(spec.seed, subject.index, 3)
    pose = draw_ct_pose(spec.ct_shape, spec.ct_spacing_mm, centre, geometry_rng)
    misalignment = draw_misalignment(spec, pose.fov_centre_mm, geometry_rng)
    pet_centre = pose.fov_centre_mm + geometry_rng.normal(0.0, 4.0, 3)
    pet_spacing = [spec.pet_voxel_mm] * 3
    pet_affine = grid_affine(spec.pet_shape, pet_spacing, centre["pet_axes"], pet_centre)
    acquisition_rng = subject_rng(spec.seed, subject.index, 4)
    acquisition = draw_acquisition(spec, subject.weight_kg, acquisition_rng)

    hu, mask = render_ct(
        subject.anatomy,
        pose,
        spec.ct_shape,
        centre,
        spec.ct_noise_hu,
        subject_rng(spec.seed, subject.index, 5),
    )
    ct_json = ct_sidecar(centre, spec.ct_spacing_mm, subject_rng(spec.seed, subject.index, 6))
    write_ct_files(bids_dir, subject.label, hu, mask, pose.ct_affine, centre, ct_json)

    world_to_patient = np.linalg.inv(pose.patient_to_ct) @ misalignment.pet_to_ct
    pet_rng = subject_rng(spec.seed, subject.index, 7)
    suv = render_pet_suv(subject.anatomy, world_to_patient, pet_affine, spec, pet_rng)
    pet = bids_path(subject.label, "pet", "pet", ".nii.gz", trc="FDG")
    bq_per_ml = suv * np.float32(acquisition.suv_to_bq_per_ml(subject.weight_kg))
    write_nifti(bids_dir / pet, bq_per_ml, pet_affine, np.float32)
    write_json(
        bids_dir / pet.with_name(pet.name.replace(".nii.gz", ".json")),
        pet_sidecar(centre, acquisition, subject.weight_kg, spec),
    )
    return _write_truth(truth_dir, subject, pose, misalignment, acquisition, pet_affine)


def _write_truth(truth_dir, subject, pose, misalignment, acquisition, pet_affine) -> dict:
    gtv = subject.gtv
    centroid_ct = apply_affine(pose.patient_to_ct, gtv.centroid_mm)
    primary_ct = apply_affine(pose.patient_to_ct, gtv.primary_centre_mm)
    truth = {
        "participant_id": f"sub-{subject.label}",
        "site": CENTRES[subject.site]["name"],
        "pet_to_ct": misalignment.pet_to_ct,
        "pet_to_ct_convention": "x_ct = pet_to_ct @ x_pet: PET world mm -> CT world mm of the "
        "same anatomical point (homogeneous 4x4, RAS)",
        "rotation_deg": misalignment.rotation_deg,
        "rotation_axis": misalignment.rotation_axis,
        "rotation_centre_mm": misalignment.rotation_centre_mm,
        "translation_mm": misalignment.translation_mm,
        "patient_to_ct": pose.patient_to_ct,
        "ct_affine": pose.ct_affine,
        "pet_affine": pet_affine,
        "gtv_volume_ml": gtv.volume_ml,
        "gtv_centroid_ct_mm": centroid_ct,
        "gtv_centroid_pet_mm": apply_affine(np.linalg.inv(misalignment.pet_to_ct), centroid_ct),
        "primary_centre_ct_mm": primary_ct,
        "n_nodes": len(subject.anatomy.nodes),
        "tumour_suv_max": gtv.suv_max,
        "tumour_suv_mean": gtv.suv_mean,
        "uptake": asdict(subject.anatomy.uptake),
        "injected_activity_mbq": acquisition.injected_mbq,
        "uptake_time_s": acquisition.scan_start_s,
        "decay_factor": acquisition.decay_factor,
        "suv_to_bq_per_ml": acquisition.suv_to_bq_per_ml(subject.weight_kg),
        "weight_kg": subject.weight_kg,
        "hpv_positive": subject.hpv_positive,
        "log_hazard_ratio": subject.log_hazard_ratio,
        "survival_months": subject.survival_months,
        "event": subject.event,
    }
    write_json(Path(truth_dir) / f"sub-{subject.label}_truth.json", truth)
    return {
        "participant_id": truth["participant_id"],
        "site": truth["site"],
        "gtv_volume_ml": gtv.volume_ml,
        "tumour_suv_max": gtv.suv_max,
        "tumour_suv_mean": gtv.suv_mean,
        "rotation_deg": misalignment.rotation_deg,
        "translation_mm": float(np.linalg.norm(misalignment.translation_mm)),
        "injected_activity_mbq": acquisition.injected_mbq,
        "uptake_time_s": acquisition.scan_start_s,
        "n_nodes": truth["n_nodes"],
        "log_hazard_ratio": subject.log_hazard_ratio,
    }


def _write_dataset_files(spec: PetCtCohortSpec, bids_dir: Path, participants: pd.DataFrame):
    write_raw_dataset(
        bids_dir,
        "neuroadapt demo_petct: synthetic head and neck cancer FDG PET/CT cohort",
        "Synthetic head and neck cancer cohort (FDG PET/CT, two centres) generated by\n"
        "neuroadapt's demo generator. Per subject a CT (sub-*/ct, a project convention:\n"
        "BIDS has no CT datatype yet, so CT files are listed in .bidsignore), a static FDG\n"
        "PET in Bq/mL (sub-*/pet) and a GTV mask on the CT grid (derivatives/gtv).\n"
        "participants.tsv holds HPV status and progression-free survival.",
        spec,
        participants,
        {
            "site": {
                "Description": "Treating centre (PET/CT scanner)",
                "Levels": {c["name"]: c["InstitutionName"] for c in CENTRES[: spec.n_sites]},
            },
            "age": {"Description": "Age at diagnosis", "Units": "year"},
            "sex": SEX,
            "weight": {"Description": "Body weight at the PET/CT", "Units": "kg"},
            "hpv_status": {
                "Description": "Human papillomavirus status of the tumour (p16)",
                "Levels": {"positive": "HPV positive", "negative": "HPV negative"},
            },
            "survival_months": {
                "Description": "Progression-free survival: time from the PET/CT to progression, "
                "death or censoring",
                "Units": "month",
            },
            "event": {
                "Description": "Whether survival_months ends in an event",
                "Levels": {"1": "progression or death observed", "0": "censored"},
            },
        },
    )
    write_ct_dataset_files(bids_dir, "neuroadapt demo_petct GTV masks")
