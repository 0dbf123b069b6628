"""The ``demo_dwi`` synthetic cohort: ADHD vs typically developing children, T1w + DWI.

Per subject (and session): a T1w image and a multi-shell DWI series (b=0 volumes,
``n_b1000`` directions at b=1000 s/mm^2 and ``n_b2000`` at b=2000 s/mm^2) simulated from
the analytic brain phantom in :mod:`neuroadapt.demo.brain` with a cylindrically symmetric
diffusion tensor per tissue and tract, per-volume rigid head motion (the gradient is
rotated into the moving head frame, as in a real scanner), partial-volume averaging over
sub-voxels and Rician noise.

Planted group effect: in ``effect_region`` the radial diffusivity of patients (ADHD) who
carry it (a share ``effect_prevalence`` of them) is multiplied by ``1 + effect_size``, so FA
is lower and MD higher there. Age raises FA (myelination); sites differ in receiver gain,
SNR and gradient scheme. The phenotype folder holds clinical scores (two ADHD-RS subscales
following one latent severity whose groups overlap by ``symptom_separation``), a small
genotype vector (a few SNPs with a slightly higher minor-allele frequency in patients,
``snp_effect``) and free-text intake reports whose wording follows the scores with errors
(``report_error_rate``). Each carries part of the diagnosis, independently of the image
given the label (so they complement it), and each is missing for some subjects: reports
not at random (more often for controls), clinical and genetic rows at random.
``phenotype_truth.tsv`` and ``modality_information.tsv`` in ``truth_dir`` say what each
modality carries (the best AUC a model of it alone can reach on the cohort).

Planted findings (multi-label, paper 3), only when ``finding_size`` is not 0: each of
:data:`FINDINGS` (a participants.tsv 0/1 column) raises diffusivities in its own region (a
pair of tracts, or a tissue outside every named tract, so never the effect region) by
``1 + weight x finding_size``: one focal, two diffuse, so they differ in how hard they are
to find. Every block of 8 consecutive subjects takes each of the 8 combinations of the
three findings once, in a seeded order per block, so findings are about independent of
diagnosis, site and sex and every combination is frequent enough to split; the findings
never draw from the subjects' random streams, so the rest of each subject's data is the
same with or without them.

Ground truth (motion parameters, noise-free FA/MD, tissue labels, the effect mask, the
T1w-to-DWI pose) goes to ``truth_dir``, outside the BIDS tree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from dipy.core.sphere import HemiSphere, disperse_charges
from nibabel.affines import apply_affine

from neuroadapt.demo import brain
from neuroadapt.demo.bidsio import (
    SEX,
    bids_path,
    subject_label,
    subject_rng,
    write_json,
    write_nifti,
    write_raw_dataset,
    write_tsv,
)
from neuroadapt.errors import ConfigError
from neuroadapt.geometry import rigid_matrix, voxel_centres
from neuroadapt.localisation import planted_mask_name

# Diffusivities in mm^2/s: (axial, radial) per tissue code and for coherent tracts.
_AXIAL = {brain.CSF: 3.0e-3, brain.GREY_MATTER: 0.95e-3, brain.WHITE_MATTER: 1.4e-3}
_RADIAL = {brain.CSF: 3.0e-3, brain.GREY_MATTER: 0.80e-3, brain.WHITE_MATTER: 0.5e-3}
_TRACT_AXIAL, _TRACT_RADIAL = 1.7e-3, 0.35e-3
# b=0 signal (arbitrary scanner units) per tissue: T2-weighted, CSF brightest.
_S0 = {brain.CSF: 3000.0, brain.GREY_MATTER: 1300.0, brain.WHITE_MATTER: 1000.0}
# T1w intensities per tissue (deep grey matter a little brighter than cortex).
_T1 = {brain.CSF: 180.0, brain.GREY_MATTER: 560.0, brain.WHITE_MATTER: 860.0}

_SCANNERS = (
    {
        "Manufacturer": "Siemens",
        "ManufacturersModelName": "Prisma_fit",
        "SoftwareVersions": "syngo MR XA30",
        "PhaseEncodingDirection": "j-",
        "EchoTime": 0.089,
        "RepetitionTime": 8.4,
        "gain": 1.0,
        "snr_factor": 1.0,
    },
    {
        "Manufacturer": "GE",
        "ManufacturersModelName": "DISCOVERY MR750",
        "SoftwareVersions": "27_LX_MR Software release:RX27.0_R02",
        "PhaseEncodingDirection": "j",
        "EchoTime": 0.0921,
        "RepetitionTime": 9.0,
        "gain": 1.35,
        "snr_factor": 0.8,
    },
)


# Head motion per unit of the spec's motion scale (see _draw_motion): at the demo's 0.4 mm /
# 0.4 deg a typical subject wanders within about 0.5 mm, with a mean FD about 0.25 mm.
MOTION_AR = 0.95
MOTION_STEP = 0.15
MOTION_SUBJECT_SIGMA = 0.4


@dataclass(frozen=True)
class DwiCohortSpec:
    """Parameters of the synthetic DWI cohort (defaults: the demo)."""

    n_subjects: int = 24
    n_sites: int = 2
    n_sessions: int = 1
    seed: int = 20261122
    shape: tuple[int, int, int] = (40, 48, 38)
    voxel_mm: float = 4.0
    t1w_voxel_mm: float = 2.0
    n_b0: int = 3
    n_b1000: int = 30
    n_b2000: int = 6
    snr: float = 25.0
    effect_region: str = "corpus_callosum"
    effect_size: float = 0.25
    #: Share of patients whose white matter carries the effect (ADHD is heterogeneous:
    #: imaging differences are found in some patients, not all); the rest look like controls.
    effect_prevalence: float = 1.0
    finding_size: float = 0.0
    motion_translation_mm: float = 0.4
    motion_rotation_deg: float = 0.4
    n_snps: int = 20
    n_informative_snps: int = 4
    #: Added to the minor-allele frequency of the informative SNPs in patients (small).
    snp_effect: float = 0.1
    #: Standardised group difference of the latent symptom severity both ADHD-RS subscales
    #: and the report follow (1.2: the groups' scores overlap; Bayes AUC about 0.80).
    symptom_separation: float = 1.2
    #: Chance that a report sentence about a symptom states the other category (errors).
    report_error_rate: float = 0.25
    #: Missing modalities: reports not at random (more often absent for controls, whose
    #: routine assessments often have none), clinical and genetic rows at random.
    report_missing_patient: float = 0.15
    report_missing_control: float = 0.35
    clinical_missing: float = 0.2
    genetics_missing: float = 0.3
    supersample: int = 2

    def check(self, where: str) -> None:
        """Raise ConfigError for values no cohort can be generated from."""
        if self.n_sites < 1:
            raise ConfigError(f"{where}.n_sites", "must be at least 1", "set n_sites: 1 or more")
        if self.n_subjects < 4 * self.n_sites:
            raise ConfigError(
                f"{where}.n_subjects",
                f"{self.n_subjects} subjects cannot give every one of {self.n_sites} sites "
                "both diagnoses and both sexes",
                f"set n_subjects to at least {4 * self.n_sites}",
            )
        if self.n_sessions < 1:
            raise ConfigError(f"{where}.n_sessions", "must be at least 1", "set n_sessions: 1")
        if len(self.shape) != 3 or min(self.shape) < 16:
            raise ConfigError(
                f"{where}.shape",
                f"{self.shape} is not 3 sizes of at least 16 voxels",
                "give e.g. [40, 48, 38]",
            )
        if self.voxel_mm <= 0 or self.t1w_voxel_mm <= 0:
            raise ConfigError(f"{where}.voxel_mm", "voxel sizes must be positive", "give mm > 0")
        if self.n_b0 < 1 or self.n_b1000 < 6:
            raise ConfigError(
                f"{where}.n_b1000",
                "a tensor fit needs at least one b=0 volume and 6 directions at b=1000",
                "set n_b0 >= 1 and n_b1000 >= 6 (30 or more is usual)",
            )
        if self.n_b2000 < 0:
            raise ConfigError(f"{where}.n_b2000", "cannot be negative", "set 0 or more")
        if self.snr <= 0:
            raise ConfigError(f"{where}.snr", "must be positive", "set e.g. snr: 25")
        if self.effect_region not in brain.REGIONS:
            raise ConfigError(
                f"{where}.effect_region",
                f"unknown region {self.effect_region!r}",
                f"use one of: {', '.join(brain.REGIONS)}",
            )
        if not -0.9 < self.effect_size < 5:
            raise ConfigError(
                f"{where}.effect_size", "must lie in (-0.9, 5)", "use e.g. 0.25 (25% higher RD)"
            )
        if not -0.9 < self.finding_size < 5:
            raise ConfigError(
                f"{where}.finding_size",
                "must lie in (-0.9, 5)",
                "use e.g. 1.0 (radial diffusivity doubled in the SLFs), 0 for none",
            )
        for key in (
            "effect_prevalence",
            "report_error_rate",
            "report_missing_patient",
            "report_missing_control",
            "clinical_missing",
            "genetics_missing",
        ):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"{where}.{key}", "must lie in [0, 1]", "give a share, e.g. 0.2")
        if not 0 <= self.snp_effect <= 0.5:
            raise ConfigError(f"{where}.snp_effect", "must lie in [0, 0.5]", "use e.g. 0.1")
        if not 0 <= self.n_informative_snps <= self.n_snps:
            raise ConfigError(
                f"{where}.n_informative_snps",
                f"must lie between 0 and n_snps ({self.n_snps})",
                "lower n_informative_snps or raise n_snps",
            )
        if self.supersample < 1:
            raise ConfigError(f"{where}.supersample", "must be at least 1", "set 1 or 2")


# The smallest cohort that still has every file and check: for smoke runs, tests and
# benchmarks (4 subjects, 9 mm voxels, 9 volumes; generates in about a second).
TINY = {
    "n_subjects": 4,
    "n_sites": 1,
    "shape": [16, 20, 16],
    "voxel_mm": 9.0,
    "t1w_voxel_mm": 9.0,
    "n_b1000": 6,
    "n_b2000": 2,
    "n_b0": 1,
    "supersample": 1,
}


def site_name(index: int) -> str:
    return f"site{chr(ord('A') + index)}"


def generate_dwi_cohort(spec: DwiCohortSpec, bids_dir: Path, truth_dir: Path) -> None:
    """Write the cohort as a raw BIDS dataset into ``bids_dir`` and its ground truth into
    ``truth_dir`` (both existing, empty folders)."""
    bids_dir, truth_dir = Path(bids_dir), Path(truth_dir)
    participants = draw_participants(spec)
    _write_dataset_files(spec, bids_dir, participants)
    _write_phenotype(spec, bids_dir, truth_dir, participants)

    schemes = [_gradient_scheme(spec, site) for site in range(spec.n_sites)]
    truth_rows = []
    for index, row in participants.iterrows():
        label = row.participant_id.removeprefix("sub-")
        site = int(row.site_index)
        anatomy = brain.BrainAnatomy.draw(subject_rng(spec.seed, index, 1), row.age)
        subject = _SubjectModel.draw(spec, anatomy, row, subject_rng(spec.seed, index, 2))
        sessions = (
            [None] if spec.n_sessions == 1 else [f"{k + 1:02d}" for k in range(spec.n_sessions)]
        )
        for k, session in enumerate(sessions):
            rng = subject_rng(spec.seed, index, 10 + k)
            truth_rows.append(
                _write_session(
                    spec, bids_dir, truth_dir, label, session, site, subject, schemes[site], rng
                )
            )
    write_tsv(truth_dir / "sessions_truth.tsv", pd.DataFrame(truth_rows))
    write_json(
        truth_dir / "effect.json",
        {
            "region": spec.effect_region,
            "effect_size": spec.effect_size,
            "description": "Patients (diagnosis ADHD) have radial diffusivity multiplied by "
            "1 + effect_size in the region: lower FA, higher MD.",
            "finding_size": spec.finding_size,
            "findings": {
                name: asdict(finding) | {"factor": 1 + finding.weight * spec.finding_size}
                for name, finding in FINDINGS.items()
            }
            if spec.finding_size
            else {},
            "spec": asdict(spec),
        },
    )


def carries_imaging_effect(spec: DwiCohortSpec, index: int, diagnosis: str) -> bool:
    """Whether subject ``index`` is a patient whose white matter carries the planted effect
    (each patient with chance ``effect_prevalence``, from a stream of its own)."""
    if diagnosis != "ADHD":
        return False
    return bool(subject_rng(spec.seed, index, 4).random() < spec.effect_prevalence)


def draw_participants(spec: DwiCohortSpec) -> pd.DataFrame:
    """Balanced design: site, diagnosis and sex cycle so every site x diagnosis x sex cell
    gets n_subjects / (4 n_sites) subjects (up to one); age is drawn per subject."""
    rows = []
    for index in range(spec.n_subjects):
        rng = subject_rng(spec.seed, index, 0)
        site = index % spec.n_sites
        patient = (index // spec.n_sites) % 2 == 1
        male = (index // (2 * spec.n_sites)) % 2 == 0
        rows.append(
            {
                "participant_id": f"sub-{subject_label(index, spec.n_subjects)}",
                "site": site_name(site),
                "age": round(float(rng.uniform(7.0, 17.0)), 1),
                "sex": "M" if male else "F",
                "handedness": "R" if rng.random() < 0.9 else "L",
                "diagnosis": "ADHD" if patient else "TD",
                "site_index": site,
            }
            | (draw_findings(spec, index) if spec.finding_size else {})
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Finding:
    """A planted finding: where (the named ``tracts``, or else the ``tissue`` outside every
    tract), which diffusivities (radial only, or with ``isotropic`` axial too: MD up, FA
    kept) and how strongly (multiplied by ``1 + weight x finding_size``)."""

    description: str
    tracts: tuple[str, ...] = ()
    tissue: str | None = None
    isotropic: bool = False
    weight: float = 1.0

    def mask(self, sample: brain.PhantomSample) -> np.ndarray:
        """Where the finding acts, (N,) bool over the sampled points."""
        if self.tracts:
            return np.isin(sample.region, [brain.region_index(t) for t in self.tracts])
        code = {v: k for k, v in brain.TISSUE_NAMES.items()}[self.tissue]
        return (sample.tissue == code) & (sample.region == 0)


#: Planted findings by participants.tsv column: a focal one in the superior longitudinal
#: fasciculi (as strong as the diagnosis effect in the corpus callosum), and two diffuse,
#: milder ones, diffuse white-matter injury and grey-matter oedema.
FINDINGS: dict[str, Finding] = {
    "slf_degeneration": Finding(
        "superior longitudinal fasciculus degeneration: radial diffusivity up in both SLFs",
        tracts=("slf_left", "slf_right"),
    ),
    "diffuse_wm_injury": Finding(
        "diffuse white-matter injury: radial diffusivity up in white matter outside the "
        "named tracts",
        tissue="wm",
        weight=0.25,
    ),
    "gm_oedema": Finding(
        "grey-matter oedema: axial and radial diffusivity up in cortex and thalami",
        tissue="gm",
        isotropic=True,
        weight=0.25,
    ),
}


def draw_findings(spec: DwiCohortSpec, index: int) -> dict[str, int]:
    """Subject ``index``'s planted findings, 0/1 per :data:`FINDINGS` column: every block of
    ``2 ** len(FINDINGS)`` consecutive subjects takes each combination once, in an order
    seeded per block (its own generator: no subject stream is touched)."""
    size = 2 ** len(FINDINGS)
    block, position = divmod(index, size)
    code = int(np.random.default_rng([spec.seed, 4000, block]).permutation(size)[position])
    return {name: (code >> k) & 1 for k, name in enumerate(FINDINGS)}


@dataclass(frozen=True)
class _SubjectModel:
    """Per-subject biology: anatomy, diffusivities and head position."""

    anatomy: brain.BrainAnatomy
    radial_factor: float  # multiplies white-matter radial diffusivity (age, individual)
    patient: bool
    carries_effect: bool
    s0_factor: float
    head_centre_mm: tuple[float, float, float]
    head_tilt_deg: tuple[float, float, float]
    findings: tuple[str, ...] = ()  # planted findings (FINDINGS keys) the subject has

    @classmethod
    def draw(cls, spec, anatomy, row, rng) -> _SubjectModel:
        maturation = 1.0 - 0.012 * (row.age - 12.0)  # older children: lower RD, higher FA
        return cls(
            anatomy=anatomy,
            radial_factor=float(maturation * rng.normal(1.0, 0.03)),
            patient=row.diagnosis == "ADHD",
            carries_effect=carries_imaging_effect(spec, int(row.name), row.diagnosis),
            s0_factor=float(rng.normal(1.0, 0.02)),
            head_centre_mm=tuple(float(v) for v in rng.normal([0, 8, 12], 3.0)),
            head_tilt_deg=tuple(float(v) for v in rng.normal(0, [3.0, 1.5, 1.5])),
            findings=tuple(name for name in FINDINGS if int(row.get(name, 0)) == 1),
        )

    def head_to_world(self) -> np.ndarray:
        """Reference pose: maps head-frame mm to scanner world mm."""
        return rigid_matrix(self.head_tilt_deg, self.head_centre_mm)

    def tissue_parameters(self, spec, sample: brain.PhantomSample):
        """Axial and radial diffusivity (mm^2/s) and S0 at each sampled point."""
        axial = np.zeros(len(sample.tissue))
        radial = np.zeros(len(sample.tissue))
        s0 = np.zeros(len(sample.tissue))
        for tissue in (brain.CSF, brain.GREY_MATTER, brain.WHITE_MATTER):
            mask = sample.tissue == tissue
            axial[mask], radial[mask], s0[mask] = _AXIAL[tissue], _RADIAL[tissue], _S0[tissue]
        tract = sample.region > 0
        axial[tract], radial[tract] = _TRACT_AXIAL, _TRACT_RADIAL
        radial[sample.tissue == brain.WHITE_MATTER] *= self.radial_factor
        if self.carries_effect:
            radial[sample.region == brain.region_index(spec.effect_region)] *= 1 + spec.effect_size
        for name in self.findings:
            finding = FINDINGS[name]
            where = finding.mask(sample)
            radial[where] *= 1 + finding.weight * spec.finding_size
            if finding.isotropic:
                axial[where] *= 1 + finding.weight * spec.finding_size
        return axial, radial, s0 * self.s0_factor


def _gradient_scheme(spec: DwiCohortSpec, site: int):
    """b-values (s/mm^2) and unit gradient directions (world frame) of a site's protocol.

    Directions are spread by electrostatic repulsion (dipy), different per site and shell;
    b=0 volumes are interleaved, first volume b=0.
    """
    rng = np.random.default_rng([spec.seed, 1000 + site])
    shells = []
    for bval, count in ((1000, spec.n_b1000), (2000, spec.n_b2000)):
        if count == 0:
            continue
        hemi = HemiSphere(theta=rng.uniform(0, np.pi, count), phi=rng.uniform(0, 2 * np.pi, count))
        hemi, _ = disperse_charges(hemi, 500)
        shells += [(bval, vertex) for vertex in hemi.vertices]
    b0_before = set(np.linspace(0, len(shells), spec.n_b0, endpoint=False).astype(int))
    volumes = []
    for position, volume in enumerate(shells):
        volumes += [(0, np.zeros(3))] * (position in b0_before) + [volume]
    volumes += [(0, np.zeros(3))] * (spec.n_b0 - len(b0_before))
    bvals = np.array([b for b, _ in volumes], dtype=float)
    bvecs = np.array([v for _, v in volumes], dtype=float)
    return bvals, bvecs


def _draw_motion(spec: DwiCohortSpec, n_volumes: int, rng: np.random.Generator) -> np.ndarray:
    """(n_volumes, 6) translations (mm) and rotations (deg), volume 0 at zero (the reference).

    A slow AR(1) wander (coefficient ``MOTION_AR``, steps of ``MOTION_STEP`` x the scale),
    times a per-subject factor (lognormal, sigma ``MOTION_SUBJECT_SIGMA``): most subjects
    stay under the usual 0.5 mm mean framewise displacement and a few move more, which the
    image QC flags."""
    scale = np.array([spec.motion_translation_mm] * 3 + [spec.motion_rotation_deg] * 3)
    scale = scale * rng.lognormal(0.0, MOTION_SUBJECT_SIGMA)
    params = np.zeros((n_volumes, 6))
    for t in range(1, n_volumes):
        params[t] = MOTION_AR * params[t - 1] + rng.normal(0.0, MOTION_STEP, 6) * scale
    return params


def _dwi_affine(spec: DwiCohortSpec) -> np.ndarray:
    """LAS axial grid centred on the scanner isocentre, as dcm2niix writes for most DWI."""
    affine = np.diag([-spec.voxel_mm, spec.voxel_mm, spec.voxel_mm, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(spec.shape) - 1) / 2.0)
    return affine


def _t1w_grid(spec: DwiCohortSpec):
    """RAS grid at ``t1w_voxel_mm`` covering the DWI field of view."""
    shape = tuple(int(round(n * spec.voxel_mm / spec.t1w_voxel_mm)) for n in spec.shape)
    affine = np.diag([spec.t1w_voxel_mm] * 3 + [1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return shape, affine


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    real = signal + rng.normal(0.0, sigma, signal.shape)
    imaginary = rng.normal(0.0, sigma, signal.shape)
    return np.sqrt(real**2 + imaginary**2)


def _write_session(spec, bids_dir, truth_dir, label, session, site, subject, scheme, rng):
    bvals, bvecs_world = scheme
    scanner = _SCANNERS[site % len(_SCANNERS)]
    affine = _dwi_affine(spec)
    n_sub = spec.supersample**3
    points = voxel_centres(spec.shape, affine, spec.supersample)
    pose0 = subject.head_to_world()
    motion = _draw_motion(spec, len(bvals), rng)
    centre = pose0[:3, 3]

    sigma = _S0[brain.WHITE_MATTER] * scanner["gain"] / (spec.snr * scanner["snr_factor"])
    data = np.zeros((*spec.shape, len(bvals)), dtype=np.float32)
    for t, (bval, gradient) in enumerate(zip(bvals, bvecs_world, strict=True)):
        pose = rigid_matrix(motion[t, 3:], motion[t, :3], centre) @ pose0
        head_points = apply_affine(np.linalg.inv(pose), points)
        sample = brain.evaluate(subject.anatomy, head_points)
        axial, radial, s0 = subject.tissue_parameters(spec, sample)
        # The scanner's gradient seen from the (rotated) head: g_head = R^T g_world.
        g_head = pose[:3, :3].T @ gradient
        cos2 = (sample.fibre @ g_head) ** 2
        signal = s0 * np.exp(-bval * (radial + (axial - radial) * cos2))
        data[..., t] = signal.reshape(*spec.shape, n_sub).mean(axis=-1)
    data = _rician(data * scanner["gain"], sigma, rng)

    dwi_name = bids_path(label, "dwi", "dwi", ".nii.gz", session)
    write_nifti(bids_dir / dwi_name, data, affine, np.int16, tr_seconds=scanner["RepetitionTime"])
    # FSL convention: bvecs along the voxel axes of a radiological (LAS) image.
    voxel_axes = affine[:3, :3] / spec.voxel_mm
    bvecs_voxel = bvecs_world @ voxel_axes
    stem = str(dwi_name).removesuffix(".nii.gz")
    (bids_dir / f"{stem}.bval").write_text(" ".join(str(int(b)) for b in bvals) + "\n")
    (bids_dir / f"{stem}.bvec").write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in axis) for axis in bvecs_voxel.T) + "\n"
    )
    write_json(bids_dir / f"{stem}.json", _dwi_sidecar(spec, site, scanner))

    t1w_shape, t1w_affine = _t1w_grid(spec)
    t1w_offset = rigid_matrix(rng.normal(0, 1.5, 3), rng.normal(0, 2.0, 3), centre)
    t1w_pose = t1w_offset @ pose0
    sample = brain.evaluate(
        subject.anatomy, apply_affine(np.linalg.inv(t1w_pose), voxel_centres(t1w_shape, t1w_affine))
    )
    t1 = np.zeros(len(sample.tissue))
    for tissue, value in _T1.items():
        t1[sample.tissue == tissue] = value
    t1 = t1.reshape(t1w_shape) * _bias_field(t1w_shape, rng)
    t1w_name = bids_path(label, "anat", "T1w", ".nii.gz", session)
    write_nifti(bids_dir / t1w_name, _rician(t1, 12.0, rng), t1w_affine, np.int16)
    write_json(bids_dir / str(t1w_name).replace(".nii.gz", ".json"), _t1w_sidecar(site, scanner))

    _write_truth(spec, truth_dir, label, session, subject, affine, pose0, motion, bvals)
    prefix = f"sub-{label}" + (f"_ses-{session}" if session else "")
    return {
        "participant_id": f"sub-{label}",
        "session_id": f"ses-{session}" if session else "n/a",
        "prefix": prefix,
        "patient": int(subject.patient),
        "carries_effect": int(subject.carries_effect),
        "radial_factor": subject.radial_factor,
        "t1w_to_dwi": " ".join(f"{v:.6f}" for v in np.linalg.inv(t1w_offset).ravel()),
        "max_translation_mm": float(np.abs(motion[:, :3]).max()),
        "max_rotation_deg": float(np.abs(motion[:, 3:]).max()),
    }


def _bias_field(shape, rng) -> np.ndarray:
    """Smooth multiplicative intensity non-uniformity of about +-10%."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    coefficients = rng.normal(0, 0.05, 3)
    return 1.0 + sum(c * g for c, g in zip(coefficients, grids, strict=True))


def _write_truth(spec, truth_dir, label, session, subject, affine, pose0, motion, bvals):
    prefix = f"sub-{label}" + (f"_ses-{session}" if session else "")
    table = pd.DataFrame(
        motion, columns=["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    )
    table.insert(0, "bval", bvals.astype(int))
    table.insert(0, "volume", np.arange(len(bvals)))
    write_tsv(truth_dir / f"{prefix}_motion.tsv", table)

    points = apply_affine(np.linalg.inv(pose0), voxel_centres(spec.shape, affine))
    sample = brain.evaluate(subject.anatomy, points)
    axial, radial, _ = subject.tissue_parameters(spec, sample)
    inside = sample.tissue != brain.BACKGROUND
    md = np.where(inside, (axial + 2 * radial) / 3, 0.0)
    norm = np.sqrt(np.maximum(axial**2 + 2 * radial**2, 1e-30))
    fa = np.where(inside, np.abs(axial - radial) / norm, 0.0)
    effect = sample.region == brain.region_index(spec.effect_region)
    write_nifti(truth_dir / f"{prefix}_desc-truth_fa.nii.gz", fa.reshape(spec.shape), affine)
    write_nifti(truth_dir / f"{prefix}_desc-truth_md.nii.gz", md.reshape(spec.shape), affine)
    write_nifti(
        truth_dir / f"{prefix}_dseg.nii.gz", sample.tissue.reshape(spec.shape), affine, np.uint8
    )
    write_nifti(
        truth_dir / f"{prefix}_desc-effect_mask.nii.gz",
        effect.reshape(spec.shape),
        affine,
        np.uint8,
    )
    for target, where in planted_regions(spec, subject, sample).items():
        write_nifti(
            truth_dir / planted_mask_name(prefix, target),
            where.reshape(spec.shape),
            affine,
            np.uint8,
        )


def planted_regions(spec: DwiCohortSpec, subject: _SubjectModel, sample) -> dict[str, np.ndarray]:
    """Target -> (N,) bool: where this subject's planted effect of that participants.tsv
    column acts (the diagnosis effect in ``effect_region`` for carriers; each finding it
    has), all False where it carries none. Attribution maps are scored against these."""
    carriers = sample.region == brain.region_index(spec.effect_region)
    regions = {"diagnosis": carriers & subject.carries_effect}
    if spec.finding_size:
        for name, finding in FINDINGS.items():
            regions[name] = finding.mask(sample) & (name in subject.findings)
    return regions


def _slice_timing(n_slices: int, repetition_time: float) -> list[float]:
    """Interleaved ascending acquisition (odd slices first), seconds."""
    order = list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))
    step = repetition_time / n_slices
    timing = [0.0] * n_slices
    for position, slice_index in enumerate(order):
        timing[slice_index] = round(position * step, 4)
    return timing


def _common_mr_fields(site: int, scanner: dict) -> dict:
    return {
        "Modality": "MR",
        "MagneticFieldStrength": 3,
        "Manufacturer": scanner["Manufacturer"],
        "ManufacturersModelName": scanner["ManufacturersModelName"],
        "SoftwareVersions": scanner["SoftwareVersions"],
        "InstitutionName": f"Synthetic Paediatric Imaging Centre {site_name(site)[-1]}",
        "BodyPartExamined": "BRAIN",
        "PatientPosition": "HFS",
        "ConversionSoftware": "dcm2niix",
        "ConversionSoftwareVersion": "v1.0.20240202",
    }


def _dwi_sidecar(spec: DwiCohortSpec, site: int, scanner: dict) -> dict:
    echo_spacing = 0.00069
    n_phase = spec.shape[1]
    return {
        **_common_mr_fields(site, scanner),
        "SeriesDescription": f"DTI_b1000_b2000_{spec.n_b1000 + spec.n_b2000}dir",
        "ProtocolName": "DTI_multishell",
        "ImageType": ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"],
        "MRAcquisitionType": "2D",
        "ScanningSequence": "EP",
        "SequenceVariant": "SK_SP",
        "EchoTime": scanner["EchoTime"],
        "RepetitionTime": scanner["RepetitionTime"],
        "FlipAngle": 90,
        "SliceThickness": spec.voxel_mm,
        "SpacingBetweenSlices": spec.voxel_mm,
        "PhaseEncodingDirection": scanner["PhaseEncodingDirection"],
        "EffectiveEchoSpacing": echo_spacing,
        "TotalReadoutTime": round(echo_spacing * (n_phase - 1), 6),
        "ParallelReductionFactorInPlane": 2,
        "PartialFourier": 0.75,
        "SliceTiming": _slice_timing(spec.shape[2], scanner["RepetitionTime"]),
    }


def _t1w_sidecar(site: int, scanner: dict) -> dict:
    return {
        **_common_mr_fields(site, scanner),
        "SeriesDescription": "T1w_MPRAGE",
        "ProtocolName": "T1w_MPRAGE",
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "NORM", "ND"],
        "MRAcquisitionType": "3D",
        "ScanningSequence": "GR_IR",
        "SequenceVariant": "SK_SP_MP",
        "EchoTime": 0.00298,
        "RepetitionTime": 2.3,
        "InversionTime": 0.9,
        "FlipAngle": 9,
    }


def _write_dataset_files(spec: DwiCohortSpec, bids_dir: Path, participants: pd.DataFrame) -> None:
    write_raw_dataset(
        bids_dir,
        "neuroadapt demo_dwi: synthetic ADHD diffusion cohort",
        "Synthetic paediatric diffusion MRI cohort (ADHD vs typically developing) generated by\n"
        "neuroadapt's demo generator. T1w and multi-shell DWI per subject, clinical scores,\n"
        "genotypes and clinical reports in phenotype/.",
        spec,
        participants.drop(columns="site_index"),
        {
            "site": {
                "Description": "Acquisition site",
                "Levels": {
                    site_name(s): f"Scanner site {site_name(s)[-1]}" for s in range(spec.n_sites)
                },
            },
            "age": {"Description": "Age at scan", "Units": "year"},
            "sex": SEX,
            "handedness": {"Description": "Handedness", "Levels": {"R": "right", "L": "left"}},
            "diagnosis": {
                "Description": "Clinical diagnosis",
                "Levels": {
                    "ADHD": "attention-deficit/hyperactivity disorder",
                    "TD": "typically developing control",
                },
            },
        }
        | {
            name: {
                "Description": f"Planted imaging finding, {finding.description} "
                f"(x {1 + finding.weight * spec.finding_size:g})",
                "Levels": {"1": "present", "0": "absent"},
            }
            for name, finding in FINDINGS.items()
            if spec.finding_size
        },
    )


def _write_phenotype(
    spec: DwiCohortSpec, bids_dir: Path, truth_dir: Path, participants: pd.DataFrame
) -> None:
    """Clinical scores, genotypes and reports that each carry part of the diagnosis, with
    errors and missing rows; what each modality carries goes to ``truth_dir``
    (``phenotype_truth.tsv`` per subject, ``modality_information.tsv`` per modality)."""
    clinical, genotype, reports, truth = [], [], [], []
    # Allele frequencies: informative SNPs differ between groups, the rest do not.
    freq_rng = np.random.default_rng([spec.seed, 2000])
    base_freq = freq_rng.uniform(0.1, 0.45, spec.n_snps)
    for index, row in participants.iterrows():
        patient = row.diagnosis == "ADHD"
        rng = subject_rng(spec.seed, index, 3)
        # One latent severity drives both subscales; the groups overlap.
        severity = rng.normal(spec.symptom_separation if patient else 0.0, 1.0)
        inattention = int(np.clip(round(8 + 4 * severity + rng.normal(0, 2.0)), 0, 27))
        hyperactivity = int(np.clip(round(6 + 4 * severity + rng.normal(0, 2.5)), 0, 27))
        iq = int(round(rng.normal(102 if patient else 105, 13)))
        freq = base_freq.copy()
        freq[: spec.n_informative_snps] += spec.snp_effect * patient
        alleles = rng.binomial(2, freq)
        text, errors, concern = clinical_report(
            row.age, row.sex, inattention, hyperactivity, rng, spec.report_error_rate
        )
        # Missing modalities from a stream of their own (the values above do not change).
        missing_rng = subject_rng(spec.seed, index, 5)
        report_missing = spec.report_missing_patient if patient else spec.report_missing_control
        has = {
            "report_text": missing_rng.random() >= report_missing,
            "clinical": missing_rng.random() >= spec.clinical_missing,
            "genetics": missing_rng.random() >= spec.genetics_missing,
        }
        pid = row.participant_id
        if has["clinical"]:
            clinical.append(
                {
                    "participant_id": pid,
                    "adhd_rs_inattention": inattention,
                    "adhd_rs_hyperactivity": hyperactivity,
                    "full_scale_iq": iq,
                }
            )
        if has["genetics"]:
            genotype.append(
                {"participant_id": pid} | {f"snp{k + 1:02d}": int(a) for k, a in enumerate(alleles)}
            )
        if has["report_text"]:
            reports.append({"participant_id": pid, "report": text})
        truth.append(
            {
                "participant_id": pid,
                "diagnosis": row.diagnosis,
                "carries_imaging_effect": int(carries_imaging_effect(spec, index, row.diagnosis)),
                "symptom_severity": round(float(severity), 4),
                "report_concern": concern,
                "report_errors": errors,
                "informative_alleles": int(alleles[: spec.n_informative_snps].sum()),
            }
            | {f"has_{m}": int(v) for m, v in has.items()}
        )
    truth = pd.DataFrame(truth)
    write_tsv(truth_dir / "phenotype_truth.tsv", truth)
    write_tsv(truth_dir / "modality_information.tsv", modality_information(spec, truth))
    folder = bids_dir / "phenotype"
    scores = ["adhd_rs_inattention", "adhd_rs_hyperactivity", "full_scale_iq"]
    write_tsv(folder / "clinical.tsv", pd.DataFrame(clinical, columns=["participant_id", *scores]))
    write_json(
        folder / "clinical.json",
        {
            "MeasurementToolMetadata": {"Description": "ADHD Rating Scale IV and WASI IQ"},
            "adhd_rs_inattention": {"Description": "ADHD-RS inattention subscale (0-27)"},
            "adhd_rs_hyperactivity": {
                "Description": "ADHD-RS hyperactivity/impulsivity subscale (0-27)"
            },
            "full_scale_iq": {"Description": "Full-scale IQ", "Units": "IQ points"},
        },
    )
    snps = [f"snp{k + 1:02d}" for k in range(spec.n_snps)]
    write_tsv(folder / "genotype.tsv", pd.DataFrame(genotype, columns=["participant_id", *snps]))
    write_json(
        folder / "genotype.json",
        {"MeasurementToolMetadata": {"Description": "Synthetic SNP array"}}
        | {
            f"snp{k + 1:02d}": {
                "Description": "Minor allele count",
                "Levels": {"0": "0", "1": "1", "2": "2"},
            }
            for k in range(spec.n_snps)
        },
    )
    write_tsv(folder / "reports.tsv", pd.DataFrame(reports, columns=["participant_id", "report"]))
    write_json(
        folder / "reports.json",
        {
            "MeasurementToolMetadata": {"Description": "Free-text clinical intake report"},
            "report": {"Description": "Clinician's free-text summary (English)"},
        },
    )


_REFERRERS = ("the family physician", "the school psychologist", "a paediatrician", "the parents")
_NEUTRAL = (
    "Sleep is reported as regular.",
    "Enjoys football and drawing.",
    "Hearing and vision screening were normal.",
    "Developmental milestones were reached on time.",
    "No history of head injury.",
    "Lives with both parents and one sibling.",
)


def clinical_report(
    age: float, sex: str, inattention: int, hyperactivity: int, rng, error_rate: float = 0.0
) -> tuple[str, int, int]:
    """A short intake report whose wording follows the symptom scores (not the label), how
    many of its symptom statements are wrong (each of the referral reason, the attention and
    the behaviour sentence states the other category with ``error_rate``) and the concern it
    states (0-4: referral 1, attention 0-2, behaviour 1)."""

    def flip() -> bool:
        return bool(rng.random() < error_rate)

    child = "boy" if sex == "M" else "girl"
    errors = 0
    concerned = inattention + hyperactivity >= 20
    if flip():
        concerned, errors = not concerned, errors + 1
    concern = (
        "difficulties with attention and schoolwork"
        if concerned
        else "a routine developmental assessment"
    )
    sentences = [f"{int(age)}-year-old {child} referred by {rng.choice(_REFERRERS)} for {concern}."]
    level = 2 if inattention >= 12 else 1 if inattention >= 8 else 0
    if flip():
        level, errors = (0 if level else 2), errors + 1
    sentences.append(
        (
            "Parents report no significant attention problems.",
            "Parents mention occasional forgetfulness with homework.",
            "Parents describe frequent careless mistakes and trouble sustaining attention.",
        )[level]
    )
    restless = hyperactivity >= 12
    if flip():
        restless, errors = not restless, errors + 1
    sentences.append(
        "Teacher notes excessive fidgeting and frequent interrupting in class."
        if restless
        else "Teacher describes age-appropriate behaviour in class."
    )
    sentences.append(str(rng.choice(_NEUTRAL)))
    sentences.append("Neurological examination unremarkable.")
    return " ".join(sentences), errors, int(concerned) + level + int(restless)


def modality_information(spec: DwiCohortSpec, truth: pd.DataFrame) -> pd.DataFrame:
    """How much each modality carries about the diagnosis, from the noise-free carriers:
    the AUC of the carrier among subjects that have the modality, and over every subject
    with absent ones at chance (what a model of that modality alone can reach at best),
    the share missing and how it is missing."""
    from sklearn.metrics import roc_auc_score

    label = truth.diagnosis.eq("ADHD").to_numpy(int)
    carriers = {
        "image": ("carries_imaging_effect", None, "completely at random (none missing)"),
        "report_text": ("report_concern", "has_report_text", "not at random: more controls"),
        "clinical": ("symptom_severity", "has_clinical", "completely at random"),
        "genetics": ("informative_alleles", "has_genetics", "completely at random"),
    }
    rows = []
    for modality, (carrier, flag, mechanism) in carriers.items():
        score = truth[carrier].to_numpy(float)
        has = np.ones(len(truth), bool) if flag is None else truth[flag].to_numpy(bool)
        present = roc_auc_score(label[has], score[has]) if len(set(label[has])) == 2 else np.nan
        ranked = np.where(has, pd.Series(score).rank(pct=True), 0.5)  # absent: a tie at 0.5
        rows.append(
            {
                "modality": modality,
                "carrier": carrier,
                "missing_share": round(1 - has.mean(), 4),
                "missing_share_patients": round(1 - has[label == 1].mean(), 4),
                "missing_share_controls": round(1 - has[label == 0].mean(), 4),
                "missing": mechanism,
                "oracle_auc_present": round(float(present), 4),
                "oracle_auc_all": round(float(roc_auc_score(label, ranked)), 4),
            }
        )
    return pd.DataFrame(rows)
