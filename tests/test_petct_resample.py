"""Resampling keeps world positions across orientations (RAS/LPS/oblique) and spacings."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from neuroadapt.errors import InputError
from neuroadapt.geometry import rigid_matrix
from neuroadapt.petct.images import from_array, from_nifti, load_image, ras_affine, save_nifti
from neuroadapt.petct.resample import box_grid, centre_of_mass_ras, resample

POINT = np.array([12.0, -30.0, 45.0])  # world RAS mm


def marked_image(affine: np.ndarray, shape=(40, 36, 30)) -> sitk.Image:
    """Zeros with one 1 at the voxel nearest to POINT, shifted so that POINT is that voxel's
    centre exactly."""
    ijk = np.round(np.linalg.inv(affine) @ np.r_[POINT, 1.0])[:3]
    affine = affine.copy()
    affine[:3, 3] += POINT - (affine @ np.r_[ijk, 1.0])[:3]
    data = np.zeros(shape, np.float32)
    data[tuple(ijk.astype(int))] = 1.0
    return from_array(data, affine)


def grid(signs, spacing, rotation=(0.0, 0.0, 0.0)):
    affine = np.diag([*(np.asarray(signs) * np.asarray(spacing)), 1.0])
    affine[:3, 3] = POINT - affine[:3, :3] @ [18, 20, 14]
    return rigid_matrix(rotation, (0, 0, 0), POINT) @ affine


GRIDS = {
    "RAS 1mm": grid((1, 1, 1), (1.0, 1.0, 1.0)),
    "LPS 2x2x3": grid((-1, -1, 1), (2.0, 2.0, 3.0)),
    "LAS 1.5x1.5x3": grid((-1, 1, 1), (1.5, 1.5, 3.0)),
    "oblique 4mm": grid((1, -1, 1), (4.0, 4.0, 4.0), rotation=(10.0, -5.0, 20.0)),
}


@pytest.mark.parametrize("source", GRIDS, ids=str)
@pytest.mark.parametrize("target", ["RAS 1mm", "LPS 2x2x3", "oblique 4mm"], ids=str)
def test_marked_point_lands_at_the_same_world_coordinate(source, target):
    image = marked_image(GRIDS[source])
    assert np.allclose(centre_of_mass_ras(image > 0.5), POINT)
    reference = marked_image(GRIDS[target])
    out = resample(image, reference, nearest=True)
    # the output voxel centred on POINT holds the mark, and every marked output voxel lies
    # within the marked source voxel (upsampling copies the mark into a block)
    index = np.linalg.solve(ras_affine(out), np.r_[POINT, 1.0])[:3]
    assert np.allclose(index, np.round(index), atol=1e-6)
    assert out.GetPixel(*[int(i) for i in np.round(index)]) == 1.0
    marked = np.argwhere(sitk.GetArrayViewFromImage(out) > 0.5)[:, ::-1]
    world = (ras_affine(out) @ np.c_[marked, np.ones(len(marked))].T).T[:, :3]
    source_voxel = np.linalg.norm(GRIDS[source][:3, :3], axis=0).max()
    assert np.all(np.linalg.norm(world - POINT, axis=1) <= np.sqrt(3) / 2 * source_voxel + 1e-6)


def test_box_grid_is_centred_and_ras_ordered():
    box = box_grid(POINT, 2.0, (8, 10, 12))
    affine = ras_affine(box)
    assert np.allclose(affine[:3, :3], np.diag([2.0, 2.0, 2.0]))
    assert np.allclose(affine @ np.r_[3.5, 4.5, 5.5, 1.0], np.r_[POINT, 1.0])


def test_nifti_round_trip_keeps_the_affine(tmp_path):
    affine = GRIDS["oblique 4mm"]
    data = np.arange(40 * 36 * 30, dtype=np.float32).reshape(40, 36, 30)
    image = from_nifti(nib.Nifti1Image(data, affine))
    save_nifti(image, tmp_path / "x.nii.gz")
    back = nib.load(tmp_path / "x.nii.gz")
    assert np.allclose(back.affine, affine, atol=1e-5)
    assert np.array_equal(back.get_fdata(), data)
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]  # no temp file left


@pytest.mark.parametrize(
    "data, problem",
    [
        (np.zeros((8, 8, 8, 3), np.float32), "not a 3D volume"),
        (np.zeros((8, 8), np.float32), "not a 3D volume"),
        (np.full((8, 8, 8), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images_are_errors_naming_the_file(tmp_path, data, problem):
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(InputError, match=problem) as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_sheared_affine_is_an_error():
    affine = np.eye(4)
    affine[0, 1] = 0.5
    with pytest.raises(InputError, match="sheared"):
        from_array(np.zeros((8, 8, 8), np.float32), affine)
