"""FA to the MNI152 template (nilearn's 2009a symmetric): a pseudo-FA made from the
template and moved by a known affine is brought back, the ITK files mean what they say,
the workflow writes template-space outputs, and failures are clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from neuroadapt.dwi import template
from neuroadapt.dwi.settings import TemplateSettings, settings_from_config
from neuroadapt.errors import ConfigError
from neuroadapt.geometry import rigid_matrix

SPACE = "MNI152NLin2009aSym"
# Template points (mm, RAS) -> subject points: 8 degrees, 6 mm, 10% scaling along x.
TRUTH = rigid_matrix((8.0, -5.0, 4.0), (6.0, -4.0, 3.0)) @ np.diag([1.1, 0.95, 1.05, 1.0])
# Mean landmark error (template brain voxels, 4 mm grid) the registration must reach.
MEAN_ERROR_MM = 1.5


def pseudo_subject(truth: np.ndarray, rng: np.random.Generator):
    """FA (0.12 + 0.5 x white-matter probability + noise, 0 outside the brain) and brain
    mask of a subject whose anatomy is the template's moved by ``truth``, sampled from the
    2 mm template onto a 3 mm subject grid (60 x 70 x 56 voxels)."""
    source = template.load_template(SPACE, 2.0)
    shape = (60, 70, 56)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = -3.0 * (np.array(shape) - 1) / 2 + np.array([0.0, -18.0, 10.0])
    world = template._voxel_world(shape, affine)
    back = np.linalg.inv(source.affine) @ np.linalg.inv(truth)
    voxels = np.moveaxis(world @ back[:3, :3].T + back[:3, 3], -1, 0)
    wm = map_coordinates(source.wm.astype(float), voxels, order=1)
    brain = map_coordinates(source.brain.astype(float), voxels, order=1) > 0.5
    fa = np.clip(0.12 + 0.5 * wm + rng.normal(0.0, 0.03, shape), 0.0, 1.0)
    return np.where(brain, fa, 0.0), brain, affine


def landmark_errors(points_to_subject, target: template.Template) -> np.ndarray:
    """|recovered - true| subject point (mm) of every template brain voxel."""
    points = template._voxel_world(target.wm.shape, target.affine)[target.brain]
    true = points @ TRUTH[:3, :3].T + TRUTH[:3, 3]
    return np.linalg.norm(points_to_subject - true, axis=1)


@pytest.fixture(scope="module")
def registered():
    """The pseudo-subject registered to the 4 mm template with affine + SyN."""
    fa, brain, affine = pseudo_subject(TRUTH, np.random.default_rng(0))
    target = template.load_template(SPACE, 4.0)
    settings = TemplateSettings(True, SPACE, 4.0, "syn")
    return template.register(fa, brain, affine, target, settings, "sub-01_dwi.nii.gz"), fa, affine


def test_registration_recovers_a_known_affine(registered):
    registration, fa, affine = registered
    target = registration.template
    points = template._voxel_world(target.wm.shape, target.affine)[target.brain]
    matrix = registration.affine
    affine_error = landmark_errors(points @ matrix[:3, :3].T + matrix[:3, 3], target)
    syn_error = landmark_errors(registration.coordinates[target.brain], target)
    print(
        f"landmark error (mm, {target.brain.sum()} template brain voxels): affine mean "
        f"{affine_error.mean():.2f} max {affine_error.max():.2f}; affine + SyN mean "
        f"{syn_error.mean():.2f} max {syn_error.max():.2f}; r {registration.correlation:.3f}; "
        f"{registration.seconds:.1f} s"
    )
    assert affine_error.mean() < MEAN_ERROR_MM and affine_error.max() < 2 * MEAN_ERROR_MM
    assert syn_error.mean() < MEAN_ERROR_MM
    assert registration.correlation > 0.9 and registration.mutual_information > 0
    # the warped FA lies on the template's white matter
    warped = registration.warp(fa, affine)
    inside = target.brain
    assert np.corrcoef(warped[inside], target.wm[inside])[0, 1] == pytest.approx(
        registration.correlation, abs=0.02
    )


def test_the_itk_files_mean_what_simpleitk_reads(registered, tmp_path):
    import SimpleITK as sitk

    registration, _, _ = registered
    flip = np.diag([-1.0, -1.0, 1.0])
    text = tmp_path / "xfm.txt"
    text.write_text(template.itk_affine_text(registration.affine))
    np.testing.assert_allclose(template.read_itk_affine(text), registration.affine, atol=1e-6)
    warp = tmp_path / "warp.nii.gz"
    nib.save(template.itk_displacement_image(registration), str(warp))
    affine = sitk.ReadTransform(str(text))
    field = sitk.DisplacementFieldTransform(sitk.ReadImage(str(warp), sitk.sitkVectorFloat64))
    target = registration.template
    world = template._voxel_world(target.wm.shape, target.affine)
    matrix = registration.affine
    for ijk in [(25, 30, 24), (15, 40, 30), (35, 20, 18)]:
        point = world[ijk]
        lps = flip @ point
        np.testing.assert_allclose(
            flip @ np.array(affine.TransformPoint(lps.tolist())),
            matrix[:3, :3] @ point + matrix[:3, 3],
            atol=1e-4,
        )
        np.testing.assert_allclose(
            flip @ np.array(field.TransformPoint(lps.tolist())),
            registration.coordinates[ijk],
            atol=1e-3,
        )


@pytest.mark.parametrize("transform", ["affine", "syn"])
def test_the_workflow_writes_template_space_outputs(tiny_dwi, tmp_path, transform):
    from neuroadapt.dwi.pipeline import SYN_KEYS, TEMPLATE_KEYS, outputs_in, process_subject

    stem = tiny_dwi / "sub-001" / "dwi" / "sub-001_dwi"
    config = {
        "denoise": {"method": "none"},
        "motion": {"enabled": False},
        "template": {"enabled": True, "resolution_mm": 8, "transform": transform},
        "model_ready": {"space": "template", "shape": [16, 16, 16]},
    }
    outputs = outputs_in(tmp_path / "out")
    summary = process_subject(
        f"{stem}.nii.gz",
        f"{stem}.bval",
        f"{stem}.bvec",
        [],
        settings_from_config(config),
        outputs,
        "sub-001",
    )
    assert all(Path(outputs[key]).is_file() for key in TEMPLATE_KEYS)
    assert all(Path(outputs[key]).exists() == (transform == "syn") for key in SYN_KEYS)
    target = template.load_template(SPACE, 8.0)
    fa = nib.load(outputs["template_fa"])
    assert fa.shape == target.wm.shape and np.allclose(fa.affine, target.affine)
    sidecar = json.loads(Path(outputs["template_fa_json"]).read_text())
    assert sidecar["Space"] == SPACE
    assert sidecar["Template"]["Source"].startswith("nilearn 0.13")
    assert sidecar["Registration"]["Transform"] == transform
    assert np.isfinite(sidecar["Registration"]["CorrelationWithTemplateWM"])
    transforms = [Path(outputs[k]).name for k in ("template_xfm", "template_warp")]
    assert sidecar["Transforms"] == transforms[: 2 if transform == "syn" else 1]
    xfm = json.loads(Path(outputs["template_xfm_json"]).read_text())
    np.testing.assert_allclose(
        template.read_itk_affine(outputs["template_xfm"]), xfm["MatrixRAS"], atol=1e-6
    )
    assert xfm["FromSpace"] == "dwi" and xfm["ToSpace"] == SPACE
    model = json.loads(Path(outputs["model_json"]).read_text())
    assert f"in {SPACE}" in model["Space"] and model["Template"]["Name"] == SPACE
    assert np.load(outputs["model_npy"]).shape == (2, 16, 16, 16)
    assert summary["template"]["Transform"] == transform and "template" in summary["timings"]
    if transform == "syn":
        warp = nib.load(outputs["template_warp"])
        assert warp.shape == (*target.wm.shape, 1, 3) and warp.header.get_intent()[0] == "vector"
        assert (
            "apply this file alone"
            in json.loads(Path(outputs["template_warp_json"]).read_text())["Composite"]
        )


def test_template_space_model_tensors_need_the_registration():
    with pytest.raises(
        ConfigError,
        match=r"config key 'dwi.model_ready.space': is template but the template registration "
        r"is off. Fix: set dwi.template.enabled: true, or model_ready.space: dwi",
    ):
        settings_from_config({"model_ready": {"space": "template"}})


def test_template_on_without_nilearn_stops_the_run_at_start_up(monkeypatch):
    from test_config import config_with

    from neuroadapt.config import validate_config

    monkeypatch.setitem(sys.modules, "nilearn", None)  # import nilearn now fails
    config = config_with(lambda c: c["dwi"].update(template={"enabled": True}))
    with pytest.raises(
        ConfigError,
        match=r"config key 'dwi.template.enabled': is true but nilearn, which ships the "
        r"MNI152NLin2009aSym template, is not importable. Fix: install nilearn 0.13 \(pip "
        r"install 'nilearn>=0.13,<0.14'",
    ):
        validate_config(config)
    validate_config(config_with(lambda c: c["dwi"].update(template={"enabled": False})))


def test_an_empty_mask_or_nan_metric_is_an_error_naming_the_subject(monkeypatch):
    target = template.load_template(SPACE, 8.0)
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    fa = np.full((20, 20, 20), 0.3)
    settings = TemplateSettings(True, SPACE, 8.0)
    with pytest.raises(
        template.RegistrationError,
        match=r"^data/sub-07_dwi.nii.gz: template registration: the brain mask is empty. "
        r"Fix: check the subject's FA map and brain mask",
    ):
        template.register(
            fa, np.zeros(fa.shape, bool), affine, target, settings, "data/sub-07_dwi.nii.gz"
        )
    mask = np.zeros(fa.shape, bool)
    mask[5:15, 5:15, 5:15] = True
    fa[8, 8, 8] = np.nan
    with pytest.raises(template.RegistrationError, match=r"FA is not finite or is constant"):
        template.register(fa, mask, affine, target, settings, "data/sub-07_dwi.nii.gz")

    def nan_metric(*args, ret_metric=False, **kwargs):
        return (None, np.eye(4), None, float("nan")) if ret_metric else (None, np.eye(4))

    monkeypatch.setattr("dipy.align.affine_registration", nan_metric)
    fa[8, 8, 8] = 0.6
    with pytest.raises(
        template.RegistrationError,
        match=r"^data/sub-07_dwi.nii.gz: template registration: the affine stage gave a NaN "
        r"metric or matrix",
    ):
        template.register(fa, mask, affine, target, settings, "data/sub-07_dwi.nii.gz")
