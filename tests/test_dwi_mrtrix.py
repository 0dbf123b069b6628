"""The MRtrix3 backend side by side with the dipy backend on the same data: tensor maps
(dwi2tensor/tensor2metric vs dipy TensorModel), denoising (dwidenoise vs dipy MP-PCA) and a
whole run with every step on MRtrix3.

MRtrix3 comes from Debian's ``mrtrix3`` package; CI installs it and sets
NEUROADAPT_REQUIRE_MRTRIX=1, so there these tests fail rather than skip when it is missing.
"""

from __future__ import annotations

import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from conftest import dwi_output_paths
from test_dwi_demo import series_paths
from test_dwi_gradients import real_series

from neuroadapt.dwi import gradients, mask
from neuroadapt.dwi.pipeline import process_subject
from neuroadapt.dwi.settings import MaskSettings, settings_from_config
from neuroadapt.dwi.workflow import save_gradients, save_nifti

if shutil.which("dwi2tensor") is None and not os.environ.get("NEUROADAPT_REQUIRE_MRTRIX"):
    pytest.skip("MRtrix3 is not installed (apt-get install mrtrix3)", allow_module_level=True)

OFF = {"denoise": {"method": "none"}, "bias": {"enabled": False}, "motion": {"enabled": False}}


def run(paths, out, config):
    outputs = dwi_output_paths(out)
    process_subject(*paths, [], settings_from_config(config), outputs, "s")
    return {k: nib.load(outputs[k]).get_fdata() for k in ("fa", "md", "mask", "preproc")}


def agreement(a, b, inside):
    """Pearson correlation and median absolute difference of two maps inside a mask."""
    return float(np.corrcoef(a[inside], b[inside])[0, 1]), float(np.median(np.abs(a - b)[inside]))


@pytest.mark.parametrize("source", ["small_64D", "demo"])
def test_tensor_maps_agree_with_mrtrix(source, tmp_path, dwi_cohort):
    paths = (
        real_series(source, tmp_path / "in") if source != "demo" else series_paths(dwi_cohort[0])
    )
    ours = run(paths, tmp_path / "dipy", OFF)
    theirs = run(paths, tmp_path / "mrtrix", OFF | {"tensor": {"backend": "mrtrix3"}})
    inside = (ours["mask"] > 0) & (ours["md"] > 0) & (theirs["md"] > 0)
    assert inside.sum() > 100 and np.array_equal(ours["mask"], theirs["mask"])
    fa_r, fa_mad = agreement(ours["fa"], theirs["fa"], inside)
    md_r, md_mad = agreement(ours["md"], theirs["md"], inside)
    md_relative = float(np.median((np.abs(ours["md"] - theirs["md"]) / theirs["md"])[inside]))
    print(
        f"{source}: FA r {fa_r:.4f}, median |dFA| {fa_mad:.4f}; MD r {md_r:.4f}, "
        f"median |dMD| {md_mad:.2e} mm^2/s ({100 * md_relative:.2f}%)"
    )
    assert fa_r > 0.98 and fa_mad < 0.01
    assert md_r > 0.98 and md_relative < 0.01


def test_denoising_agrees_with_dwidenoise(dwi_cohort, tmp_path):
    paths = series_paths(dwi_cohort[0])
    ours = run(paths, tmp_path / "dipy", OFF | {"denoise": {"method": "mppca"}})
    theirs = run(
        paths, tmp_path / "mrtrix", OFF | {"denoise": {"method": "mppca", "backend": "mrtrix3"}}
    )
    raw = nib.as_closest_canonical(nib.load(paths[0])).get_fdata()
    inside = ours["mask"] > 0
    r, _ = agreement(
        ours["preproc"], theirs["preproc"], inside[..., None].repeat(raw.shape[-1], -1)
    )
    # what each denoiser removed: the residuals agree as well as the images do
    removed_ours, removed_theirs = raw - ours["preproc"], raw - theirs["preproc"]
    spread = np.std(removed_ours[inside]), np.std(removed_theirs[inside])
    print(
        f"denoised images r {r:.5f}; removed-noise std dipy {spread[0]:.2f}, MRtrix3 {spread[1]:.2f}"
    )
    assert r > 0.99
    assert 0.8 < spread[0] / spread[1] < 1.25


def test_every_step_on_mrtrix_gives_physical_maps(dwi_cohort, tmp_path):
    config = {
        "denoise": {"backend": "mrtrix3"},
        "unring": {"enabled": True, "backend": "mrtrix3"},
        "motion": {"enabled": False},
        "mask": {"backend": "mrtrix3"},
        "tensor": {"backend": "mrtrix3"},
    }
    maps = run(series_paths(dwi_cohort[0]), tmp_path / "out", config)
    inside = maps["mask"] > 0
    assert inside.sum() > 1000
    assert 0 <= maps["fa"].min() and maps["fa"].max() <= 1
    assert 0.1 < np.median(maps["fa"][inside]) < 0.6
    assert 3e-4 < np.median(maps["md"][inside]) < 1.5e-3  # mm^2/s, brain tissue


def test_mrtrix_mask_covers_the_brain_like_median_otsu(dwi_cohort, tmp_path):
    series = gradients.to_ras(gradients.load_dwi(*series_paths(dwi_cohort[0])))
    ours = mask.brain_mask(mask.b0_reference(series.data, series.b0_mask()), MaskSettings())
    image = save_nifti(series.data, series.affine, tmp_path / "dwi.nii")
    bval, bvec = save_gradients(series.bvals, series.bvecs_voxel, series.affine, tmp_path / "dwi")
    from neuroadapt.dwi import mrtrix

    theirs = mrtrix.brain_mask(image, bval, bvec, tmp_path)
    dice = 2 * (ours & theirs).sum() / (ours.sum() + theirs.sum())
    print(f"brain mask Dice, median_otsu vs dwi2mask: {dice:.3f}")
    assert dice > 0.85


def test_a_failing_mrtrix_command_is_an_error_not_a_stale_file(tmp_path):
    """nipype's mrtrix3 interfaces report success on a non-zero exit status; the backend
    must not then read an old output lying in the folder."""
    from neuroadapt.dwi import mrtrix

    broken = tmp_path / "broken.nii"
    broken.write_bytes(b"not a NIfTI file")
    nib.save(
        nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)),
        tmp_path / "mrtrix_unring.nii",
    )
    with pytest.raises(mrtrix.MrtrixError, match=r"mrdegibbs .*broken.nii"):
        mrtrix.unring(str(broken), tmp_path)
