"""Images between NIfTI files (nibabel, RAS+ affines) and SimpleITK (LPS+ physical space).

SimpleITK images are built from nibabel's voxel array and affine rather than read by ITK,
so both libraries agree on scaling (slope/intercept) and on the sform/qform choice, and an
affine with shear is refused instead of being silently made orthogonal.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from neuroadapt.errors import InputError

# RAS <-> LPS: flip the first two world axes (its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_matrix(ras_matrix: np.ndarray) -> np.ndarray:
    """A 4x4 world transform written in RAS mm, rewritten in LPS mm (and back)."""
    return RAS_TO_LPS @ np.asarray(ras_matrix, float) @ RAS_TO_LPS


def from_nifti(image: nib.Nifti1Image, path: str | os.PathLike = "<image>") -> sitk.Image:
    """A 3D NIfTI image as a float32 SimpleITK image at the same world positions.

    Raises InputError (naming ``path``) if the image is not 3D (a trailing axis of length 1
    is dropped), holds NaN/inf, or its affine is singular or sheared.
    """
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(
            path,
            f"is a {len(image.shape)}D image of shape {tuple(image.shape)}, not a 3D volume",
            "give a single 3D volume (for a dynamic PET, sum or pick the static frame first)",
        )
    data = image.get_fdata(dtype=np.float32).reshape(shape)
    if not np.all(np.isfinite(data)):
        count = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise InputError(
            path,
            f"holds {count} NaN or infinite voxel values",
            "reconvert or repair the image; NaNs must not reach registration or training",
        )
    return from_array(data, image.affine, path)


def from_array(
    data: np.ndarray, affine: np.ndarray, path: str | os.PathLike = "<image>"
) -> sitk.Image:
    """SimpleITK image of ``data`` (X, Y, Z) placed by the RAS voxel-to-world ``affine``."""
    affine = np.asarray(affine, float)
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if not np.all(spacing > 0) or abs(np.linalg.det(linear)) < 1e-9:
        raise InputError(path, "has a singular voxel-to-world affine", "repair the header")
    direction = linear / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(
            path,
            "has a sheared voxel-to-world affine (its axes are not orthogonal)",
            "resample the image to an orthogonal grid first",
        )
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple((RAS_TO_LPS[:3, :3] @ direction).ravel()))
    image.SetOrigin(tuple(float(v) for v in RAS_TO_LPS[:3, :3] @ affine[:3, 3]))
    return image


def ras_affine(image: sitk.Image) -> np.ndarray:
    """4x4 RAS voxel-to-world affine of a SimpleITK image."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = RAS_TO_LPS[:3, :3] @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = RAS_TO_LPS[:3, :3] @ np.asarray(image.GetOrigin())
    return affine


def to_array(image: sitk.Image) -> np.ndarray:
    """Voxel values as an (X, Y, Z) array (nibabel's axis order)."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def load_image(path: str | os.PathLike) -> sitk.Image:
    """Read a 3D NIfTI file as a float32 SimpleITK image (see :func:`from_nifti`)."""
    try:
        image = nib.load(str(path))
    except (OSError, nib.filebasedimages.ImageFileError) as error:
        raise InputError(path, f"cannot be read as NIfTI ({error})", "reconvert it") from None
    return from_nifti(image, path)


def save_nifti(image: sitk.Image, path: str | os.PathLike, dtype=np.float32) -> None:
    """Write ``image`` as NIfTI-1 (sform and qform, mm) atomically: temp file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = ras_affine(image)
    nifti = nib.Nifti1Image(to_array(image).astype(dtype), affine)
    nifti.header.set_xyzt_units("mm")
    nifti.set_sform(affine, code=1)
    nifti.set_qform(affine, code=1)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        nib.save(nifti, staging)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
