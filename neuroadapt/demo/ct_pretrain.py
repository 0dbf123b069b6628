"""The ``demo_ct_pretrain`` synthetic cohort: CT-only head and neck scans for pretraining.

Backbones are pretrained on CT before they are adapted to PET/CT (PEMMA starts from a
CT-trained model). This cohort gives them the same phantom family as ``demo_petct``
(:mod:`neuroadapt.demo.head_neck`, same centres and CT protocol) but other people: its own
seed and subject labels ``ctp001``, ``ctp002``, ... that cannot collide with the PET/CT
cohort's numeric labels. Half of the subjects have a tumour (``lesion`` 1), half none
(``lesion`` 0), balanced within each site, for supervised (lesion present?) or
self-supervised pretraining.

Layout of ``bids_dir`` (same CT convention as :mod:`neuroadapt.demo.petct`)::

    dataset_description.json  README  CHANGES  .bidsignore  participants.tsv/.json
    sub-ctp<nnn>/ct/sub-ctp<nnn>_ct.nii.gz (+ .json)
    derivatives/gtv/sub-ctp<nnn>/ct/sub-ctp<nnn>_space-CT_label-GTV_mask.nii.gz  (all 0
        when lesion is 0)

Ground truth in ``truth_dir``: ``sub-ctp<nnn>_truth.json`` and ``truth.tsv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from nibabel.affines import apply_affine

from neuroadapt.demo import head_neck
from neuroadapt.demo.bidsio import (
    SEX,
    subject_label,
    subject_rng,
    write_json,
    write_raw_dataset,
    write_tsv,
)
from neuroadapt.demo.petct import (
    CENTRES,
    check_grid_shape,
    check_positive,
    ct_sidecar,
    draw_ct_pose,
    render_ct,
    write_ct_dataset_files,
    write_ct_files,
)
from neuroadapt.errors import ConfigError

LABEL_PREFIX = "ctp"


@dataclass(frozen=True)
class CtPretrainCohortSpec:
    """Parameters of the CT pretraining cohort (defaults: the demo). Sizes as in
    :class:`neuroadapt.demo.petct.PetCtCohortSpec`: ``ct_shape`` voxels of
    ``ct_spacing_mm`` (x, y, z), noise ``ct_noise_hu`` (HU)."""

    n_subjects: int = 16
    n_sites: int = 2
    seed: int = 20261124
    ct_shape: tuple[int, int, int] = (112, 112, 50)
    ct_spacing_mm: tuple[float, float, float] = (1.5, 1.5, 3.0)
    ct_noise_hu: float = 12.0
    node_probability: float = 0.5
    tumour_volume_ml: float = 12.0

    def check(self, where: str) -> None:
        """Raise ConfigError for values no cohort can be generated from."""
        if not 1 <= self.n_sites <= len(CENTRES):
            raise ConfigError(
                f"{where}.n_sites", f"must lie between 1 and {len(CENTRES)}", "set n_sites: 2"
            )
        if self.n_subjects < 2 * self.n_sites:
            raise ConfigError(
                f"{where}.n_subjects",
                f"{self.n_subjects} subjects cannot give each of {self.n_sites} sites a subject "
                "with and one without a lesion",
                f"set n_subjects to at least {2 * self.n_sites}",
            )
        check_grid_shape(where, "ct_shape", self.ct_shape)
        check_positive(where, "ct_spacing_mm", self.ct_spacing_mm, "give e.g. [1.5, 1.5, 3.0]")
        check_positive(where, "tumour_volume_ml", (self.tumour_volume_ml,), "give e.g. 12")
        if self.ct_noise_hu < 0:
            raise ConfigError(f"{where}.ct_noise_hu", "cannot be negative", "give 0 or more")
        if not 0 <= self.node_probability <= 1:
            raise ConfigError(f"{where}.node_probability", "must lie in [0, 1]", "e.g. 0.5")


@dataclass(frozen=True)
class CtPretrainSubject:
    """Everything drawn for one subject before imaging."""

    index: int
    label: str
    site: int
    lesion: bool
    age: float
    sex: str
    weight_kg: float
    anatomy: head_neck.HeadNeckAnatomy


def draw_subject(spec: CtPretrainCohortSpec, index: int) -> CtPretrainSubject:
    """Subject ``index``. Sites alternate; lesion alternates every ``n_sites`` subjects so
    every site gets both classes."""
    rng = subject_rng(spec.seed, index, 0)
    male = rng.random() < 0.7
    weight = float(np.clip(rng.normal(80.0 if male else 66.0, 13.0), 42.0, 140.0))
    age = float(np.clip(rng.normal(60.0, 11.0), 30.0, 88.0))
    lesion = (index // spec.n_sites) % 2 == 0
    anatomy = head_neck.HeadNeckAnatomy.draw(
        subject_rng(spec.seed, index, 1),
        weight,
        lesion=lesion,
        node_probability=spec.node_probability,
        tumour_volume_ml=(spec.tumour_volume_ml, 0.8),
    )
    return CtPretrainSubject(
        index=index,
        label=LABEL_PREFIX + subject_label(index, spec.n_subjects),
        site=index % spec.n_sites,
        lesion=lesion,
        age=round(age, 1),
        sex="M" if male else "F",
        weight_kg=round(weight, 1),
        anatomy=anatomy,
    )


def participants_table(subjects: list[CtPretrainSubject]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{s.label}" for s in subjects],
            "site": [CENTRES[s.site]["name"] for s in subjects],
            "age": [s.age for s in subjects],
            "sex": [s.sex for s in subjects],
            "lesion": [int(s.lesion) for s in subjects],
        }
    )


def generate_ct_pretrain_cohort(
    spec: CtPretrainCohortSpec, bids_dir: Path, truth_dir: Path
) -> None:
    """Write the cohort as a raw BIDS dataset into ``bids_dir`` and its ground truth into
    ``truth_dir`` (both existing, empty folders). Same spec, same bytes."""
    bids_dir, truth_dir = Path(bids_dir), Path(truth_dir)
    subjects = [draw_subject(spec, index) for index in range(spec.n_subjects)]
    _write_dataset_files(spec, bids_dir, participants_table(subjects))
    rows = []
    for subject in subjects:
        centre = CENTRES[subject.site]
        pose = draw_ct_pose(
            spec.ct_shape, spec.ct_spacing_mm, centre, subject_rng(spec.seed, subject.index, 3)
        )
        hu, mask = render_ct(
            subject.anatomy,
            pose,
            spec.ct_shape,
            centre,
            spec.ct_noise_hu,
            subject_rng(spec.seed, subject.index, 5),
        )
        sidecar = ct_sidecar(centre, spec.ct_spacing_mm, subject_rng(spec.seed, subject.index, 6))
        write_ct_files(bids_dir, subject.label, hu, mask, pose.ct_affine, centre, sidecar)
        rows.append(_write_truth(truth_dir, subject, pose))
    write_tsv(truth_dir / "truth.tsv", pd.DataFrame(rows))


def _write_truth(truth_dir: Path, subject: CtPretrainSubject, pose) -> dict:
    gtv = head_neck.gtv_truth(subject.anatomy)
    centroid = None if gtv is None else apply_affine(pose.patient_to_ct, gtv.centroid_mm)
    row = {
        "participant_id": f"sub-{subject.label}",
        "site": CENTRES[subject.site]["name"],
        "lesion": int(subject.lesion),
        "gtv_volume_ml": 0.0 if gtv is None else gtv.volume_ml,
        "n_nodes": len(subject.anatomy.nodes),
    }
    write_json(
        truth_dir / f"sub-{subject.label}_truth.json",
        {
            **row,
            "gtv_centroid_ct_mm": centroid,
            "patient_to_ct": pose.patient_to_ct,
            "ct_affine": pose.ct_affine,
            "weight_kg": subject.weight_kg,
        },
    )
    return row


def _write_dataset_files(spec: CtPretrainCohortSpec, bids_dir: Path, participants) -> None:
    write_raw_dataset(
        bids_dir,
        "neuroadapt demo_ct_pretrain: synthetic head and neck CT for pretraining",
        "Synthetic head and neck CT cohort for pretraining backbones, generated by\n"
        "neuroadapt's demo generator. CT only (sub-*/ct, a project convention listed in\n"
        ".bidsignore); half the subjects have a tumour (participants.tsv: lesion), whose\n"
        "mask is in derivatives/gtv.",
        spec,
        participants,
        {
            "site": {
                "Description": "Centre (CT scanner)",
                "Levels": {c["name"]: c["InstitutionName"] for c in CENTRES[: spec.n_sites]},
            },
            "age": {"Description": "Age at scan", "Units": "year"},
            "sex": SEX,
            "lesion": {
                "Description": "Whether the scan shows a tumour",
                "Levels": {"1": "tumour present", "0": "no tumour"},
            },
        },
    )
    write_ct_dataset_files(bids_dir, "neuroadapt demo_ct_pretrain GTV masks")
