"""Datasets QSIPrep already preprocessed: ingestion takes its preprocessed DWI, gradients and
brain mask (``qsiprep_dir``), and the diffusion stage runs only the tensor fit and later
steps, with the same kind of outputs.

QSIPrep cannot run here (it is a container of FSL, ANTs, MRtrix3 ...), so its output folder
is written by the test with QSIPrep's names and conventions: LPS+ images
(``sub-X_space-T1w_desc-preproc_dwi.nii.gz`` with .bval/.bvec), ``desc-brain_mask`` and
``desc-confounds_timeseries.tsv`` beside them, for 3 of the 4 subjects.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import dwi_output_paths
from dipy.core.gradients import gradient_table
from dipy.io.gradients import read_bvals_bvecs
from dipy.reconst.dti import TensorModel

from neuroadapt.bids import ingest
from neuroadapt.dwi import gradients, mask
from neuroadapt.dwi.motion import PARAMETER_NAMES
from neuroadapt.dwi.pipeline import process_subject
from neuroadapt.dwi.settings import MaskSettings, settings_from_config
from neuroadapt.errors import InputError

LPS = np.diag([-1.0, -1.0, 1.0])


def write_qsiprep_subject(bids, folder, label, rng):
    """QSIPrep-named outputs of one subject: the raw series reoriented to LPS+ (QSIPrep's
    output orientation) with matching FSL gradients, a brain mask and confounds."""
    series = gradients.to_ras(
        gradients.load_dwi(
            *(bids / f"sub-{label}/dwi/sub-{label}_dwi.{e}" for e in ("nii.gz", "bval", "bvec"))
        )
    )
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS voxel axes -> LPS voxel axes (x, y reversed)
    shape = np.array(series.data.shape[:3])
    to_lps = flip.copy()
    to_lps[:3, 3] = (shape - 1) * np.array([1, 1, 0])
    affine = series.affine @ to_lps
    data = series.data[::-1, ::-1]
    b0 = mask.b0_reference(series.data, series.b0_mask())
    brain = mask.brain_mask(b0, MaskSettings())[::-1, ::-1]
    out = folder / f"sub-{label}" / "dwi"
    out.mkdir(parents=True)
    stem = out / f"sub-{label}_space-T1w_desc-preproc_dwi"
    nib.save(nib.Nifti1Image(data, affine), f"{stem}.nii.gz")
    nib.save(
        nib.Nifti1Image(brain.astype(np.uint8), affine),
        out / f"sub-{label}_space-T1w_desc-brain_mask.nii.gz",
    )
    (out / f"{stem.name}.bval").write_text(" ".join(f"{b:g}" for b in series.bvals) + "\n")
    fsl = gradients.voxel_to_fsl(series.bvecs_voxel @ LPS, affine)
    (out / f"{stem.name}.bvec").write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in row) for row in fsl) + "\n"
    )
    n = len(series.bvals)
    confounds = pd.DataFrame(rng.normal(0, 0.01, (n, 6)), columns=list(PARAMETER_NAMES))
    confounds["framewise_displacement"] = [np.nan, *rng.uniform(0.05, 0.3, n - 1)]
    confounds.to_csv(
        out / f"sub-{label}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a"
    )
    return f"{stem}.nii.gz"


@pytest.fixture(scope="module")
def qsiprep_dataset(dwi_cohort, tmp_path_factory):
    """A copy of the 4-subject cohort with derivatives/qsiprep for sub-001..003."""
    bids = tmp_path_factory.mktemp("qsiprep") / "bids"
    shutil.copytree(dwi_cohort[0], bids)
    folder = bids / "derivatives" / "qsiprep"
    folder.mkdir(parents=True)
    (folder / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "QSIPrep output",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "qsiprep", "Version": "1.0.0"}],
            }
        )
    )
    rng = np.random.default_rng(0)
    for label in ("001", "002", "003"):
        write_qsiprep_subject(bids, folder, label, rng)
    return bids


def test_ingestion_takes_qsiprep_outputs_instead_of_the_raw_dwi(qsiprep_dataset):
    result = ingest(qsiprep_dataset, ["dwi"], label="diagnosis", qsiprep_dir="derivatives/qsiprep")
    table = result.table
    assert list(table.participant_id) == ["sub-001", "sub-002", "sub-003"]  # 004 has none
    assert result.report["dropped"] == [{"id": "sub-004", "missing": ["dwi", "dwi_mask"]}]
    first = table.iloc[0]
    folder = qsiprep_dataset / "derivatives" / "qsiprep" / "sub-001" / "dwi"
    assert first.dwi == str(folder / "sub-001_space-T1w_desc-preproc_dwi.nii.gz")
    assert first.dwi_bval == str(folder / "sub-001_space-T1w_desc-preproc_dwi.bval")
    assert first.dwi_mask == str(folder / "sub-001_space-T1w_desc-brain_mask.nii.gz")
    with pytest.raises(InputError, match=r"derivatives/qsiprepp: is not a folder"):
        ingest(qsiprep_dataset, ["dwi"], label="diagnosis", qsiprep_dir="derivatives/qsiprepp")


def test_only_the_tensor_fit_runs_on_qsiprep_outputs(qsiprep_dataset, tmp_path):
    row = ingest(
        qsiprep_dataset, ["dwi"], label="diagnosis", qsiprep_dir="derivatives/qsiprep"
    ).table.iloc[0]
    outputs = dwi_output_paths(tmp_path / "out")
    summary = process_subject(
        row.dwi,
        row.dwi_bval,
        row.dwi_bvec,
        [],
        settings_from_config({}),
        outputs,
        "sub-001",
        mask=row.dwi_mask,
    )
    assert set(summary["timings"]) == {"conform", "mask", "tensor", "workflow_total"}
    # the mask is QSIPrep's, reoriented like the series
    given = nib.as_closest_canonical(nib.load(row.dwi_mask)).get_fdata() > 0
    written = nib.load(outputs["mask"]).get_fdata() > 0
    assert np.array_equal(written, given)
    # FA equals a direct dipy fit of QSIPrep's series (b <= 1200) in that mask
    image = nib.load(row.dwi)
    bvals, bvecs = read_bvals_bvecs(row.dwi_bval, row.dwi_bvec)
    keep = bvals <= 1200
    fit = TensorModel(gradient_table(bvals[keep], bvecs=bvecs[keep])).fit(
        image.get_fdata()[..., keep]
    )
    direct = nib.as_closest_canonical(nib.Nifti1Image(np.clip(fit.fa, 0, 1), image.affine))
    fa = nib.load(outputs["fa"]).get_fdata()
    assert np.allclose(fa[given], direct.get_fdata()[given], atol=1e-5)
    # motion confounds are QSIPrep's own, not zeros
    theirs = pd.read_csv(
        next((qsiprep_dataset / "derivatives/qsiprep/sub-001/dwi").glob("*confounds*")),
        sep="\t",
        na_values="n/a",
    )
    ours = pd.read_csv(outputs["confounds"], sep="\t", na_values="n/a")
    assert np.allclose(ours[list(PARAMETER_NAMES)], theirs[list(PARAMETER_NAMES)])
    assert ours.framewise_displacement[0] == 0
    assert np.allclose(ours.framewise_displacement[1:], theirs.framewise_displacement[1:])
    steps = json.loads(open(outputs["preproc_json"]).read())["Steps"]
    assert "QSIPrep" in steps["Preprocessing"] and "MotionCorrection" not in steps


def test_a_mask_on_another_grid_is_an_error_naming_it(qsiprep_dataset, tmp_path):
    row = ingest(
        qsiprep_dataset, ["dwi"], label="diagnosis", qsiprep_dir="derivatives/qsiprep"
    ).table.iloc[0]
    small = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.uint8), np.eye(4)), small)
    out = tmp_path / "out"
    with pytest.raises(Exception, match=r"mask.nii.gz: is not on the grid of its DWI series"):
        process_subject(
            row.dwi,
            row.dwi_bval,
            row.dwi_bvec,
            [],
            settings_from_config({}),
            dwi_output_paths(out),
            "sub-001",
            mask=str(small),
        )
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.workflow
def test_the_workflow_runs_the_tensor_fit_on_qsiprep_outputs(qsiprep_dataset, tmp_path):
    from test_workflow import _experiment, snakemake, write_config

    config = {
        "datasets": {
            "study": {
                "bids_dir": str(qsiprep_dataset),
                "label": "diagnosis",
                "qsiprep_dir": "derivatives/qsiprep",
            }
        },
        "experiments": {"dti": _experiment("study")},
    }
    fa = "results/study/derivatives/neuroadapt/sub-001/dwi/sub-001_space-dwi_model-tensor_param-fa_dwimap.nii.gz"
    args = ("--directory", str(tmp_path), "--replace-workflow-config", "--configfile")
    description = "results/study/derivatives/neuroadapt/dataset_description.json"
    snakemake(fa, description, "--cores", "1", *args, str(write_config(tmp_path, config)))
    generated = json.loads((tmp_path / description).read_text())["GeneratedBy"][0]
    assert generated["Name"] == "neuroadapt" and generated["CodeURL"].startswith("https://")
    table = pd.read_csv(tmp_path / "results/study/subjects.tsv", sep="\t")
    assert table.dwi_mask.notna().all()
    sidecar = json.loads((tmp_path / fa.replace("_dwimap.nii.gz", "_dwimap.json")).read_text())
    assert sidecar["Sources"][0].endswith("sub-001_space-T1w_desc-preproc_dwi.nii.gz")
    assert (
        "denoise"
        not in (tmp_path / "logs/dwi/study/sub-001/sub-001.log")
        .read_text()
        .split("seconds per step")[1]
        .split("\n")[0]
    )

    # A changed diffusion setting reruns the diffusion job and nothing upstream of it.
    config["dwi"] = {"tensor": {"fit_method": "OLS"}}
    plan = snakemake(fa, "-n", *args, str(write_config(tmp_path, config))).stdout
    jobs = {
        line.split()[0]: line.split()[1]
        for line in plan.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert jobs.get("dwi") == "1" and "ingest" not in jobs, plan
    assert "params" in plan.lower(), plan
