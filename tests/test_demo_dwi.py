"""The demo_dwi generator: valid BIDS, realistic sidecars, determinism, planted effect."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bids_validator import BIDSValidator
from conftest import TINY_DWI, make_cohort
from dipy.core.gradients import gradient_table
from dipy.io.gradients import read_bvals_bvecs
from dipy.reconst.dti import TensorModel

from neuroadapt.demo.dwi import DwiCohortSpec, draw_participants
from neuroadapt.errors import ConfigError
from neuroadapt.spec import spec_from_mapping


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_every_file_has_a_valid_bids_name(dwi_cohort):
    bids, _ = dwi_cohort
    validator = BIDSValidator()
    names = ["/" + str(p.relative_to(bids)) for p in bids.rglob("*") if p.is_file()]
    assert len(names) > 20
    invalid = [name for name in names if not validator.is_bids(name)]
    assert invalid == []


def test_layout_and_sidecars_carry_what_scanners_write(dwi_cohort):
    bids, _ = dwi_cohort
    description = json.loads((bids / "dataset_description.json").read_text())
    assert description["BIDSVersion"] and description["DatasetType"] == "raw"
    assert description["GeneratedBy"][0]["Name"] == "neuroadapt"
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    assert list(participants.columns) == [
        "participant_id",
        "site",
        "age",
        "sex",
        "handedness",
        "diagnosis",
    ]
    levels = json.loads((bids / "participants.json").read_text())["diagnosis"]["Levels"]
    assert set(levels) == {"ADHD", "TD"}

    sub = participants.participant_id[0]
    dwi = json.loads((bids / sub / "dwi" / f"{sub}_dwi.json").read_text())
    for key in (
        "PhaseEncodingDirection",
        "TotalReadoutTime",
        "EchoTime",
        "RepetitionTime",
        "SliceTiming",
        "MagneticFieldStrength",
        "Manufacturer",
        "EffectiveEchoSpacing",
    ):
        assert key in dwi, key
    image = nib.load(bids / sub / "dwi" / f"{sub}_dwi.nii.gz")
    assert len(dwi["SliceTiming"]) == image.shape[2]
    assert 0 <= min(dwi["SliceTiming"]) and max(dwi["SliceTiming"]) < dwi["RepetitionTime"]
    t1w = json.loads((bids / sub / "anat" / f"{sub}_T1w.json").read_text())
    for key in ("RepetitionTime", "EchoTime", "InversionTime", "FlipAngle"):
        assert key in t1w, key


def test_dwi_series_matches_its_gradient_files(dwi_cohort):
    bids, _ = dwi_cohort
    spec = DwiCohortSpec()
    stem = bids / "sub-001" / "dwi" / "sub-001_dwi"
    bvals, bvecs = read_bvals_bvecs(f"{stem}.bval", f"{stem}.bvec")
    image = nib.load(f"{stem}.nii.gz")
    assert image.ndim == 4 and image.shape[:3] == spec.shape
    assert image.shape[3] == len(bvals) == spec.n_b0 + spec.n_b1000 + spec.n_b2000
    assert (bvals == 0).sum() == spec.n_b0 and bvals[0] == 0
    assert (bvals == 1000).sum() == spec.n_b1000 and (bvals == 2000).sum() == spec.n_b2000
    norms = np.linalg.norm(bvecs, axis=1)
    np.testing.assert_allclose(norms[bvals > 0], 1.0, atol=1e-5)
    assert np.all(norms[bvals == 0] == 0)
    # Background is pure Rician noise: positive mean, no structure.
    corner = image.dataobj[:3, :3, :3, 0]
    assert 0 < corner.mean() < 200


def test_default_design_is_balanced():
    table = draw_participants(DwiCohortSpec())
    assert len(table) == 24
    cells = table.groupby(["site", "diagnosis", "sex"]).size()
    assert len(cells) == 8 and set(cells) == {3}
    ages = table.groupby("diagnosis").age.mean()
    assert abs(ages["ADHD"] - ages["TD"]) < 2.5


def test_generation_is_deterministic_and_stable_when_the_cohort_grows(tmp_path):
    first, first_truth = make_cohort(tmp_path, TINY_DWI, "a")
    second, _ = make_cohort(tmp_path, TINY_DWI, "b")
    assert _hashes(first) == _hashes(second)
    larger, _ = make_cohort(tmp_path, TINY_DWI | {"n_subjects": 5}, "c")
    small, large = _hashes(first), _hashes(larger)
    for name in (
        "sub-001/dwi/sub-001_dwi.nii.gz",
        "sub-001/anat/sub-001_T1w.nii.gz",
        "sub-002/dwi/sub-002_dwi.bvec",
    ):
        assert small[name] == large[name]
    assert "sub-005/dwi/sub-005_dwi.nii.gz" in large
    # Ground truth stays outside the raw tree.
    assert not any("truth" in name or "motion" in name for name in small)
    assert (first_truth / "sub-001_motion.tsv").is_file()


def test_head_motion_is_small_and_starts_at_the_reference(dwi_cohort):
    _, truth = dwi_cohort
    motion = pd.read_csv(truth / "sub-001_motion.tsv", sep="\t")
    assert (motion.iloc[0, 2:] == 0).all()
    moving = motion[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].abs()
    assert 0.05 < moving.to_numpy().max() < 3.0


def _region_contrast(bids: Path, truth: Path, subject: str) -> tuple[float, float]:
    """FA and MD in the effect region relative to the rest of white matter (which removes
    the age and individual factors that act on all white matter)."""
    stem = bids / subject / "dwi" / f"{subject}_dwi"
    bvals, bvecs = read_bvals_bvecs(f"{stem}.bval", f"{stem}.bvec")
    keep = bvals <= 1200  # single-shell tensor fit, as TractoFlow does
    data = nib.load(f"{stem}.nii.gz").get_fdata()[..., keep]
    region = nib.load(truth / f"{subject}_desc-effect_mask.nii.gz").get_fdata() > 0
    white = (nib.load(truth / f"{subject}_dseg.nii.gz").get_fdata() == 3) & ~region
    fit = TensorModel(gradient_table(bvals[keep], bvecs=bvecs[keep])).fit(data, mask=region | white)
    return fit.fa[region].mean() / fit.fa[white].mean(), fit.md[region].mean() / fit.md[
        white
    ].mean()


def test_planted_effect_is_measurable_with_a_tensor_fit(dwi_cohort):
    bids, truth = dwi_cohort
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    contrast = {
        row.participant_id: (row.diagnosis, *_region_contrast(bids, truth, row.participant_id))
        for row in participants.itertuples()
    }
    patients = [v for v in contrast.values() if v[0] == "ADHD"]
    controls = [v for v in contrast.values() if v[0] == "TD"]
    assert len(patients) == len(controls) == 2
    # Every patient has lower relative FA and higher relative MD than every control.
    assert max(p[1] for p in patients) < min(c[1] for c in controls) - 0.02, contrast
    assert min(p[2] for p in patients) > max(c[2] for c in controls) + 0.02, contrast
    effect = json.loads((truth / "effect.json").read_text())
    assert effect["region"] == "corpus_callosum" and effect["effect_size"] == 0.25


def test_without_an_effect_the_groups_do_not_separate(tmp_path):
    """The contrast above comes from the planted effect, not from the design."""
    bids, truth = make_cohort(
        tmp_path, {"kind": "dwi", "n_subjects": 4, "n_sites": 1, "effect_size": 0.0}
    )
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    fa = {row.diagnosis: [] for row in participants.itertuples()}
    for row in participants.itertuples():
        fa[row.diagnosis].append(_region_contrast(bids, truth, row.participant_id)[0])
    assert abs(np.mean(fa["ADHD"]) - np.mean(fa["TD"])) < 0.05


def test_spec_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"datasets\.d\.synthetic\.n_subject'.*n_subjects"):
        spec_from_mapping(DwiCohortSpec, {"n_subject": 3}, "datasets.d.synthetic")
    with pytest.raises(ConfigError, match=r"synthetic\.n_subjects'.*at least 8"):
        spec_from_mapping(DwiCohortSpec, {"n_subjects": 6}, "datasets.d.synthetic")
    with pytest.raises(
        ConfigError, match=r"effect_region'.*unknown region 'amygdala'.*corpus_callosum"
    ):
        spec_from_mapping(DwiCohortSpec, {"effect_region": "amygdala"}, "datasets.d.synthetic")
    with pytest.raises(ConfigError, match=r"snr.*must be float"):
        spec_from_mapping(DwiCohortSpec, {"snr": "high"}, "datasets.d.synthetic")


def test_phenotype_modalities_carry_part_of_the_diagnosis_and_go_missing(tmp_path):
    """On 400 subjects (tables only): every modality carries some, not all, of the label
    (the ground truth's oracle AUCs lie between 0.55 and 0.95), reports go missing more
    often for controls, tables at the configured rates; the share of patients carrying the
    imaging effect follows effect_prevalence; missingness never changes the values."""
    from neuroadapt.demo.dwi import _write_phenotype

    def tables(name, **settings):
        spec = DwiCohortSpec(n_subjects=400, **settings)
        bids, truth = tmp_path / name / "bids", tmp_path / name / "truth"
        (bids / "phenotype").mkdir(parents=True)
        truth.mkdir()
        _write_phenotype(spec, bids, truth, draw_participants(spec))
        read = lambda p: pd.read_csv(p, sep="\t")  # noqa: E731
        return (
            read(truth / "modality_information.tsv").set_index("modality"),
            {t: read(bids / "phenotype" / f"{t}.tsv") for t in ("clinical", "genotype", "reports")},
            read(truth / "phenotype_truth.tsv"),
        )

    info, files, truth = tables("default", effect_prevalence=0.6)
    assert info.oracle_auc_present.between(0.55, 0.95).all(), info
    assert (info.oracle_auc_all <= info.oracle_auc_present + 1e-9).all()
    assert info.loc["report_text", "missing_share_controls"] == pytest.approx(0.35, abs=0.08)
    assert info.loc["report_text", "missing_share_patients"] == pytest.approx(0.15, abs=0.08)
    assert info.loc["clinical", "missing_share"] == pytest.approx(0.2, abs=0.06)
    assert info.loc["genetics", "missing_share"] == pytest.approx(0.3, abs=0.06)
    assert info.loc["image", "missing_share"] == 0
    assert len(files["clinical"]) == truth.has_clinical.sum()
    assert len(files["reports"]) == truth.has_report_text.sum()
    patients = truth[truth.diagnosis == "ADHD"]
    assert patients.carries_imaging_effect.mean() == pytest.approx(0.6, abs=0.08)
    assert truth[truth.diagnosis == "TD"].carries_imaging_effect.eq(0).all()
    # without missing rows and errors the same subjects have the same scores
    _, complete, _ = tables(
        "complete",
        effect_prevalence=0.6,
        report_missing_patient=0,
        report_missing_control=0,
        clinical_missing=0,
        genetics_missing=0,
    )
    assert len(complete["clinical"]) == 400
    merged = files["clinical"].merge(complete["clinical"], on="participant_id")
    assert (merged.adhd_rs_inattention_x == merged.adhd_rs_inattention_y).all()


def test_reports_state_the_scores_with_the_configured_error_rate():
    from neuroadapt.demo.dwi import clinical_report

    rng = np.random.default_rng(0)
    text, errors, concern = clinical_report(10, "F", 20, 15, rng, error_rate=0.0)
    assert errors == 0 and concern == 4 and "trouble sustaining attention" in text
    text, errors, concern = clinical_report(10, "F", 20, 15, rng, error_rate=1.0)
    assert errors == 3 and concern == 0 and "no significant attention problems" in text
    assert "age-appropriate behaviour" in text and "routine developmental" in text


def test_planted_regions_say_where_each_subjects_effects_act(dwi_cohort, tmp_path):
    """The ground truth the attribution maps are scored against: the diagnosis effect's
    region for carriers (the effect mask), nothing for the others; each finding's region
    exactly for the subjects who have it."""
    _, truth = dwi_cohort
    carriers = pd.read_csv(truth / "sessions_truth.tsv", sep="\t").set_index("participant_id")
    for subject, carries in carriers.carries_effect.items():
        planted = nib.load(truth / f"{subject}_planted-diagnosis_mask.nii.gz").get_fdata() > 0
        effect = nib.load(truth / f"{subject}_desc-effect_mask.nii.gz").get_fdata() > 0
        assert effect.any()
        assert (planted == effect).all() if carries else not planted.any()
    assert not list(truth.glob("*_planted-slf_degeneration_mask.nii.gz"))  # no findings planted
    bids, truth = make_cohort(tmp_path, TINY_DWI | {"n_subjects": 8, "finding_size": 1.0})
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    for row in participants.itertuples():
        dseg = nib.load(truth / f"{row.participant_id}_dseg.nii.gz").get_fdata()
        for finding in ("slf_degeneration", "diffuse_wm_injury", "gm_oedema"):
            mask = nib.load(truth / f"{row.participant_id}_planted-{finding}_mask.nii.gz")
            where = mask.get_fdata() > 0
            assert where.any() == bool(getattr(row, finding)), (row.participant_id, finding)
        if row.gm_oedema:  # grey matter outside the tracts
            where = nib.load(truth / f"{row.participant_id}_planted-gm_oedema_mask.nii.gz")
            assert (dseg[where.get_fdata() > 0] == 2).all()
