"""DWI loading checks, reorientation to RAS with b-vector rotation, motion b-vector rotation."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import dwi_output_paths
from dipy.data import get_fnames
from dipy.io.gradients import read_bvals_bvecs
from dipy.reconst.dti import TensorModel

from neuroadapt.dwi import gradients
from neuroadapt.dwi.pipeline import process_subject
from neuroadapt.dwi.settings import settings_from_config
from neuroadapt.errors import InputError
from neuroadapt.geometry import rigid_matrix


def real_series(name: str, folder) -> tuple[str, str, str]:
    """dipy's shipped real DWI ``name`` with FSL-format gradient files (small_64D stores
    (N, 3) b-vectors with NaN for its b=0 volume, which ingestion rejects: set to 0)."""
    image, bval, bvec = get_fnames(name=name)
    bvals, bvecs = read_bvals_bvecs(bval, bvec)
    folder.mkdir(parents=True, exist_ok=True)
    bval_out, bvec_out = folder / f"{name}.bval", folder / f"{name}.bvec"
    bval_out.write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    vectors = np.nan_to_num(bvecs).T
    bvec_out.write_text("\n".join(" ".join(f"{v:.8f}" for v in row) for row in vectors) + "\n")
    return image, str(bval_out), str(bvec_out)


@pytest.fixture(scope="module")
def small_64d(tmp_path_factory):
    return real_series("small_64D", tmp_path_factory.mktemp("real"))


def write_series(folder, data, affine, bvals, bvecs_fsl, name="dwi"):
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), image)
    (folder / f"{name}.bval").write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    (folder / f"{name}.bvec").write_text(
        "\n".join(" ".join(f"{v:.8f}" for v in row) for row in bvecs_fsl) + "\n"
    )
    return image, folder / f"{name}.bval", folder / f"{name}.bvec"


def tensor_of(series):
    """FA and principal eigenvectors in world (RAS) coordinates of a reoriented series."""
    fit = TensorModel(series.gtab()).fit(series.data)
    world = np.einsum("ij,...jk->...ik", gradients.voxel_axes(series.affine), fit.evecs)
    return fit.fa, world[..., 0]


def test_reorientation_to_ras_gives_the_same_tensor(small_64d, tmp_path):
    """The same acquisition stored with axes permuted and flipped (FSL b-vectors written by
    the FSL rule for that image) gives the same FA and the same world eigenvectors."""
    reference = gradients.to_ras(gradients.load_dwi(*small_64d))
    data = reference.data
    affine = reference.affine
    # Permute x<->y and flip z: voxel (i, j, k) -> (j, i, K-1-k).
    stored = data.transpose(1, 0, 2, 3)[:, :, ::-1]
    shape_z = data.shape[2]
    permute = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, shape_z - 1], [0, 0, 0, 1.0]])
    stored_affine = affine @ np.linalg.inv(permute)
    vectors = reference.bvecs_voxel[:, [1, 0, 2]] * np.array([1, 1, -1])
    fsl = vectors.T.copy()
    if np.linalg.det(stored_affine[:3, :3]) > 0:
        fsl[0] *= -1
    paths = write_series(tmp_path, stored, stored_affine, reference.bvals, fsl)
    reoriented = gradients.to_ras(gradients.load_dwi(*paths))
    assert np.allclose(reoriented.affine, affine)
    assert np.allclose(reoriented.data, data)
    fa_a, v1_a = tensor_of(reference)
    fa_b, v1_b = tensor_of(reoriented)
    assert np.allclose(fa_a, fa_b, atol=1e-5)
    anisotropic = fa_a > 0.3
    cosine = np.abs((v1_a * v1_b).sum(-1))[anisotropic]
    assert cosine.min() > 0.999


def test_motion_bvec_rotation_undoes_a_head_rotation(small_64d):
    """A volume acquired with the head rotated by R sees gradient R^T g; after correction
    (transform reference -> volume with rotation R) the rotated b-vector is R^T g."""
    series = gradients.to_ras(gradients.load_dwi(*small_64d))
    transforms = np.repeat(np.eye(4)[None], len(series.bvals), axis=0)
    rotation = rigid_matrix((4.0, -3.0, 6.0), (1.0, 0.0, 2.0))
    weighted = np.flatnonzero(series.bvals > 50)
    transforms[weighted[5]] = rotation
    rotated = gradients.rotate_bvecs(series.bvecs_voxel, series.bvals, transforms, series.affine)
    axes = gradients.voxel_axes(series.affine)
    world = axes @ series.bvecs_voxel[weighted[5]]
    expected = axes.T @ (rotation[:3, :3].T @ world)
    assert np.allclose(rotated[weighted[5]], expected, atol=1e-6)
    untouched = np.setdiff1d(np.arange(len(series.bvals)), [weighted[5]])
    assert np.allclose(rotated[untouched], series.bvecs_voxel[untouched], atol=1e-6)


# ------------------------------------------------------------------ bad inputs


def good_series(tmp_path, small_64d):
    image = nib.load(small_64d[0])
    bvals = np.loadtxt(small_64d[1])
    bvecs = np.loadtxt(small_64d[2])
    return image.get_fdata(dtype=np.float32), image.affine, bvals, bvecs


@pytest.mark.parametrize(
    "breakage, culprit, words",
    [
        ("count", "image", "volumes but"),
        ("no_b0", "bval", "no b=0 volume"),
        ("not_4d", "image", "expected a 4D image"),
        ("nan", "image", "NaN/inf"),
        ("not_unit", "bvec", "not unit length"),
    ],
)
def test_bad_input_is_an_input_error_naming_the_file_and_writes_nothing(
    breakage, culprit, words, small_64d, tmp_path
):
    data, affine, bvals, bvecs = good_series(tmp_path, small_64d)
    if breakage == "count":
        bvals, bvecs = bvals[:-1], bvecs[:, :-1]
    elif breakage == "no_b0":
        bvals = np.where(bvals < 50, 1000.0, bvals)
        bvecs[:, bvecs.any(axis=0) == 0] = [[1.0], [0.0], [0.0]]
    elif breakage == "not_4d":
        data = data[..., 0]
    elif breakage == "nan":
        data[2, 3, 4, 5] = np.nan
    elif breakage == "not_unit":
        bvecs[:, 10] *= 1.5
    image, bval, bvec = write_series(tmp_path / "in", data, affine, bvals, bvecs)
    culprit_path = {"image": image, "bval": bval, "bvec": bvec}[culprit]
    out = tmp_path / "out"
    with pytest.raises(InputError) as error:
        process_subject(
            str(image),
            str(bval),
            str(bvec),
            [],
            settings_from_config({}),
            dwi_output_paths(out),
            "x",
        )
    assert error.value.path == str(culprit_path)
    assert words in str(error.value) and "Fix:" in str(error.value)
    assert not out.exists() or list(out.iterdir()) == []
