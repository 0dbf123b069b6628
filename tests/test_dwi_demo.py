"""The pipeline on the synthetic demo_dwi cohort against its ground truth: FA/MD error,
recovery of the planted head motion, and motion correction lowering the FA error."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import dwi_output_paths, make_cohort

from neuroadapt.demo import brain
from neuroadapt.demo.bidsio import subject_rng
from neuroadapt.demo.dwi import DwiCohortSpec, _SubjectModel, draw_participants
from neuroadapt.dwi import gradients, mask, motion
from neuroadapt.dwi.pipeline import process_subject
from neuroadapt.dwi.settings import MaskSettings, MotionSettings, settings_from_config
from neuroadapt.geometry import rigid_matrix

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The demo config's dwi section (one motion round; MP-PCA in the head mask).
DEMO = {"motion": {"iterations": 1}}
# Tolerances on white + grey matter inside the brain mask (4 mm voxels, SNR 25).
FA_MAE, MD_MEDIAN_RELATIVE = 0.06, 0.03


def series_paths(bids, label="001"):
    stem = bids / f"sub-{label}" / "dwi" / f"sub-{label}_dwi"
    return str(stem) + ".nii.gz", str(stem) + ".bval", str(stem) + ".bvec"


def truth_map(truth, name, label="001"):
    image = nib.load(truth / f"sub-{label}_{name}.nii.gz")
    return nib.as_closest_canonical(image).get_fdata()


def run(bids, tmp_path, config):
    out = tmp_path / "out"
    outputs = dwi_output_paths(out)
    summary = process_subject(
        *series_paths(bids), [], settings_from_config(config), outputs, "sub-001"
    )
    return outputs, summary


def errors(outputs, truth):
    fa, md = (nib.load(outputs[k]).get_fdata() for k in ("fa", "md"))
    tissue = truth_map(truth, "dseg")
    inside = (nib.load(outputs["mask"]).get_fdata() > 0) & (
        (tissue == brain.GREY_MATTER) | (tissue == brain.WHITE_MATTER)
    )
    true_fa, true_md = truth_map(truth, "desc-truth_fa"), truth_map(truth, "desc-truth_md")
    return (
        float(np.abs(fa - true_fa)[inside].mean()),
        float(np.median(np.abs(md - true_md)[inside] / true_md[inside])),
    )


def test_demo_fa_md_match_the_ground_truth(dwi_cohort, tmp_path):
    bids, truth = dwi_cohort
    outputs, summary = run(bids, tmp_path, DEMO)
    fa_error, md_error = errors(outputs, truth)
    print(f"demo sub-001: FA MAE {fa_error:.4f}, MD median relative error {md_error:.4f}")
    assert fa_error < FA_MAE and md_error < MD_MEDIAN_RELATIVE
    assert summary["qc"]["nonphysical_fraction"] < 0.01
    confounds = pd.read_csv(outputs["confounds"], sep="\t")
    assert list(confounds.columns[-1:]) == ["framewise_displacement"]
    assert len(confounds) == len(np.loadtxt(series_paths(bids)[1]))


# ------------------------------------------------------------------ motion


@pytest.fixture(scope="module")
def moving_cohort(tmp_path_factory):
    """Four subjects whose heads move 5x more than the demo's (1 subject is used)."""
    synthetic = {
        "kind": "dwi",
        "n_subjects": 4,
        "n_sites": 1,
        "motion_translation_mm": 2.0,
        "motion_rotation_deg": 2.0,
    }
    return make_cohort(tmp_path_factory.mktemp("moving"), synthetic, "moving")


def true_transforms(truth, index=0, label="001"):
    """Reference -> volume world transforms of the generator (rotation about the head
    centre, which the generator draws but does not write: redrawn here)."""
    spec_fields = json.loads((truth / "effect.json").read_text())["spec"]
    spec = DwiCohortSpec(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in spec_fields.items()}
    )
    row = draw_participants(spec).iloc[index]
    anatomy = brain.BrainAnatomy.draw(subject_rng(spec.seed, index, 1), row.age)
    subject = _SubjectModel.draw(spec, anatomy, row, subject_rng(spec.seed, index, 2))
    centre = subject.head_to_world()[:3, 3]
    table = pd.read_csv(truth / f"sub-{label}_motion.tsv", sep="\t")
    rotations = table[["rot_x", "rot_y", "rot_z"]].to_numpy(float)
    translations = table[["trans_x", "trans_y", "trans_z"]].to_numpy(float)
    return np.stack(
        [rigid_matrix(r, t, centre) for r, t in zip(rotations, translations, strict=True)]
    )


def test_motion_correction_recovers_the_planted_b0_motion(moving_cohort):
    """b=0 volumes (same contrast as the reference) are recovered; the residual of every
    volume is printed. Diffusion-weighted volumes are not yet recovered reliably (their
    registration to the tensor prediction leaves errors of the order of the planted
    motion), so no assertion is made on them here."""
    bids, truth = moving_cohort
    series = gradients.to_ras(gradients.load_dwi(*series_paths(bids)))
    b0 = mask.b0_reference(series.data, series.b0_mask())
    head = mask.head_mask(b0, MaskSettings())
    result = motion.correct_motion(
        series.data,
        series.affine,
        series.bvals,
        series.bvecs_voxel,
        head,
        MotionSettings(iterations=1),
    )
    brain_mask = mask.brain_mask(b0, MaskSettings())
    points = nib.affines.apply_affine(series.affine, np.argwhere(brain_mask))
    expected = true_transforms(truth)

    def displacement(a, b):
        moved_a = nib.affines.apply_affine(a, points)
        return np.linalg.norm(moved_a - nib.affines.apply_affine(b, points), axis=1).mean()

    error = np.array([displacement(a, b) for a, b in zip(result.transforms, expected, strict=True)])
    planted = np.array([displacement(np.eye(4), b) for b in expected])
    print("per-volume residual (mm):", np.round(error, 2).tolist())
    print("per-volume planted (mm):", np.round(planted, 2).tolist())
    b0s = np.flatnonzero(series.bvals <= 50)[1:]
    assert (error[b0s] < 0.3 * planted[b0s]).all()
