"""Tensor fit on dipy's real shipped DWI: the pipeline with preprocessing off equals a
direct dipy fit; with preprocessing on, values stay physical. Model-ready arrays."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import dwi_output_paths
from dipy.core.gradients import gradient_table
from dipy.io.gradients import read_bvals_bvecs
from dipy.reconst.dti import TensorModel
from test_dwi_gradients import real_series

from neuroadapt.dwi import model_ready
from neuroadapt.dwi.pipeline import process_subject
from neuroadapt.dwi.settings import ModelReadySettings, settings_from_config

OFF = {"denoise": {"method": "none"}, "bias": {"enabled": False}, "motion": {"enabled": False}}


def run(tmp_path, name, config):
    image, bval, bvec = real_series(name, tmp_path / "in")
    out = tmp_path / "out"
    outputs = dwi_output_paths(out)
    summary = process_subject(image, bval, bvec, [], settings_from_config(config), outputs, "s")
    return outputs, summary


@pytest.mark.parametrize("name", ["small_64D", "small_101D"])
def test_preprocessing_off_equals_a_direct_dipy_fit(name, tmp_path):
    """small_64D is stored oblique and not in RAS order: the pipeline reorients it, and
    FA/MD/AD (rotation invariant) equal dipy's fit of the file as stored, reoriented."""
    outputs, _ = run(tmp_path, name, OFF)
    image, bval, bvec = real_series(name, tmp_path / "in")
    nifti = nib.load(image)
    bvals, bvecs = read_bvals_bvecs(bval, bvec)
    keep = bvals <= 1200
    gtab = gradient_table(bvals[keep], bvecs=bvecs[keep])
    direct = TensorModel(gtab, fit_method="WLS").fit(nifti.get_fdata()[..., keep])

    def as_output(values):
        return nib.as_closest_canonical(nib.Nifti1Image(values, nifti.affine)).get_fdata()

    mask = nib.load(outputs["mask"]).get_fdata() > 0
    assert mask.sum() > 50
    for key, expected in (("fa", np.clip(direct.fa, 0, 1)), ("md", direct.md), ("ad", direct.ad)):
        values = nib.load(outputs[key]).get_fdata()
        assert np.allclose(values[mask], as_output(expected)[mask], rtol=1e-4, atol=1e-6), key


def test_full_preprocessing_on_real_data_stays_physical(tmp_path):
    # Motion correction is left out: a 10x10x10 image is too small to register reliably.
    outputs, summary = run(tmp_path, "small_64D", {"motion": {"enabled": False}})
    mask = nib.load(outputs["mask"]).get_fdata() > 0
    fa = nib.load(outputs["fa"]).get_fdata()[mask]
    md = nib.load(outputs["md"]).get_fdata()[mask]
    assert fa.min() >= 0 and fa.max() <= 1
    assert 0 < np.median(md) < 3.2e-3  # mm^2/s: below free water at body temperature
    assert summary["qc"]["nonphysical_fraction"] < 0.05
    tensor = np.load(outputs["model_npy"])
    assert tensor.dtype == np.float16 and tensor.shape == (2, 32, 32, 32)
    assert 0 <= tensor.min() and tensor.max() <= 1
    assert set(summary["timings"]) >= {"conform", "denoise", "mask", "tensor"}


def test_model_ready_crops_to_the_brain_and_keeps_values():
    shape = (30, 30, 30)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    mask = np.zeros(shape, bool)
    mask[5:25, 8:22, 10:20] = True
    fa = np.where(mask, 0.5, 0.9).astype(np.float32)
    md = np.where(mask, 1.5e-3, 3e-3).astype(np.float32)
    tensor, box = model_ready.model_ready(
        fa, md, mask, affine, ModelReadySettings(shape=(16, 16, 16), margin_mm=0.0)
    )
    assert tensor.shape == (2, 16, 16, 16)
    assert np.isclose(box[0, 0], 40 / 16)  # longest side (20 voxels x 2 mm) fills the grid
    centre = tensor[:, 8, 8, 8].astype(float)
    assert np.allclose(centre, [0.5, 0.5], atol=1e-3)
    assert tensor[:, 0, 0, 0].max() == 0  # outside the brain
