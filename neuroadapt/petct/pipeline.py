"""One subject end to end, as the ``petct`` rule runs it: SUV -> registration -> PET on
the CT grid -> common cropped grid -> normalised model-ready tensors.

Everything is computed before the first file is written, and each file is written to a
temporary name and renamed, so a bad input leaves no output behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from neuroadapt.bids import merge_sidecars
from neuroadapt.errors import InputError
from neuroadapt.io import atomic_write_text
from neuroadapt.petct import frames, qc, registration, resample, suv
from neuroadapt.petct.images import from_array, from_nifti, load_image, ras_affine, save_nifti
from neuroadapt.spec import spec_from_mapping

# Output keys of :func:`process_subject` (the rule's named outputs).
OUTPUT_KEYS = (
    "suv",
    "suv_json",
    "xfm",
    "xfm_json",
    "pet_ct",
    "pet_ct_json",
    "ct_box",
    "pet_box",
    "gtv_box",
    "box_json",
    "tensor",
    "tensor_nii",
    "mask",
    "qc_figure",
)


@dataclass(frozen=True)
class PetCtSettings:
    """The ``petct`` config section."""

    registration: registration.RegistrationSettings = field(
        default_factory=registration.RegistrationSettings
    )
    crop: resample.CropSettings = field(default_factory=resample.CropSettings)
    suv_fallback: Mapping = field(default_factory=dict)
    static_window_s: tuple[float, float] = frames.DEFAULT_WINDOW_S


def settings_from_config(section: Mapping | None) -> PetCtSettings:
    """PetCtSettings from the (schema-validated) ``petct`` config section."""
    section = dict(section or {})
    return PetCtSettings(
        registration=spec_from_mapping(
            registration.RegistrationSettings,
            section.get("registration"),
            "petct.registration",
        ),
        crop=spec_from_mapping(resample.CropSettings, section.get("crop"), "petct.crop"),
        suv_fallback=dict((section.get("suv") or {}).get("fallback") or {}),
        static_window_s=tuple(section.get("static_window_s", frames.DEFAULT_WINDOW_S)),
    )


def check_pair(ct: str | None, pet: str | None) -> None:
    """A PET needs its CT and a CT its PET: InputError naming the file that is alone."""
    if bool(ct) != bool(pet):
        alone, missing = (pet, "CT") if pet else (ct, "PET")
        raise InputError(
            alone,
            f"has no {missing} of the same subject/session to register with",
            f"add the {missing} to the dataset, or exclude this subject (datasets.<name>.exclude)",
        )


def load_static_pet(
    pet_path: str, sidecar: Mapping, window_s: Sequence[float], sidecar_path: str
) -> tuple[sitk.Image, frames.FrameWindow | None]:
    """The PET as a 3D image: a static PET as it is, a dynamic one (4D, more than one frame)
    as the duration-weighted mean of the frames in ``window_s`` (s after the injection)."""
    try:
        image = nib.load(str(pet_path))
    except (OSError, nib.filebasedimages.ImageFileError) as error:
        raise InputError(pet_path, f"cannot be read as NIfTI ({error})", "reconvert it") from None
    if len(image.shape) != 4 or image.shape[3] == 1:
        return from_nifti(image, pet_path), None
    window = frames.select_frames(sidecar, image.shape[3], window_s, sidecar_path)
    static = frames.static_image(image.dataobj, window)
    if not np.all(np.isfinite(static)):
        raise InputError(
            pet_path,
            f"holds NaN or infinite values in frames {list(window.indices)}",
            "reconvert or repair the image",
        )
    return from_array(static, image.affine, pet_path), window


def process_subject(
    ct_path: str,
    pet_path: str,
    pet_sidecars: Sequence[str],
    gtv_path: str | None,
    settings: PetCtSettings,
    outputs: Mapping[str, str],
    threads: int = 1,
) -> dict:
    """Run the chain for one subject and write ``outputs`` (keys: :data:`OUTPUT_KEYS`).
    Returns a summary (metric, transform, crop centre)."""
    check_pair(ct_path, pet_path)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    ct = load_image(ct_path)
    gtv = load_image(gtv_path) if gtv_path else None
    sidecar_path = pet_sidecars[-1] if pet_sidecars else pet_path
    sidecar = merge_sidecars(pet_sidecars)
    pet, window = load_static_pet(pet_path, sidecar, settings.static_window_s, sidecar_path)
    factors = suv.suv_factors(sidecar, settings.suv_fallback, sidecar_path)
    pet_suv = suv.to_suv(pet, factors)

    try:
        result = registration.register(ct, pet_suv, settings.registration, threads=threads)
    except InputError as error:
        raise InputError(pet_path, error.problem, error.fix) from None
    itk = registration.pet_to_ct_to_itk(result.pet_to_ct)
    pet_on_ct = resample.resample(pet_suv, ct, itk)

    crop = settings.crop
    centre = resample.crop_centre(ct, gtv, crop, gtv_path)
    box = resample.box_grid(centre, crop.spacing_mm, crop.box_voxels)
    ct_box = resample.resample(ct, box, default=resample.CT_AIR_HU)
    pet_box = resample.resample(pet_suv, box, itk)
    gtv_box = None if gtv is None else resample.resample(gtv, box, nearest=True)
    tensor = np.stack(
        [
            resample.window(ct_box, *crop.ct_hu_window),
            resample.window(pet_box, *crop.pet_suv_window),
        ]
    ).astype(np.float16)
    mask = (
        np.zeros(tensor.shape[1:], np.uint8)
        if gtv_box is None
        else (sitk.GetArrayFromImage(gtv_box).transpose(2, 1, 0) > 0).astype(np.uint8)
    )

    registration_info = {
        "pet_to_ct": result.pet_to_ct.tolist(),
        "pet_to_ct_convention": "x_ct = pet_to_ct @ x_pet: PET world mm -> CT world mm of the "
        "same anatomical point (homogeneous 4x4, RAS+)",
        "ITKTransformFile": Path(outputs["xfm"]).name,
        "ITKTransformConvention": "maps CT physical points (LPS) to PET physical points: apply "
        "it to resample the PET onto the CT (antsApplyTransforms -r CT -i PET -t file)",
        "Metric": "Mattes mutual information (negative: lower is better)",
        "FinalMetricValue": result.metric,
        "Iterations": result.iterations,
        "StopCondition": result.stop_condition,
        "Seconds": round(result.seconds, 3),
        "Settings": asdict(settings.registration),
        "Sources": [str(ct_path), str(pet_path)],
    }
    box_info = {
        "SpaceDescription": "isotropic box with RAS-ordered axes centred on the "
        f"{'GTV centre of mass' if crop.centre == 'gtv' else 'CT body centre of mass'}",
        "BoxCentreRAS": [float(v) for v in centre],
        "SpacingMM": crop.spacing_mm,
        "BoxVoxels": list(crop.box_voxels),
        "CTWindowHU": list(crop.ct_hu_window),
        "PETWindowSUV": list(crop.pet_suv_window),
        "Normalisation": "clip to the window, then map linearly onto [0, 1]",
        "TensorChannels": ["ct", "pet"],
        "TensorShape": list(tensor.shape),
        "TensorDtype": "float16",
        "MaskInterpolation": "nearest neighbour",
        "GTVVoxelsInBox": int(mask.sum()),
        "Sources": [str(ct_path), str(pet_path), *([str(gtv_path)] if gtv_path else [])],
    }
    suv_info = factors.as_sidecar() | {"Sources": [str(pet_path), *map(str, pet_sidecars)]}
    if window is not None:
        suv_info |= window.as_sidecar()

    save_nifti(pet_suv, outputs["suv"])
    _write_json(outputs["suv_json"], suv_info)
    _write_transform(itk, outputs["xfm"])
    _write_json(outputs["xfm_json"], registration_info)
    save_nifti(pet_on_ct, outputs["pet_ct"])
    _write_json(outputs["pet_ct_json"], suv_info | {"Resampling": "linear, onto the CT grid"})
    save_nifti(ct_box, outputs["ct_box"])
    save_nifti(pet_box, outputs["pet_box"])
    if gtv_box is not None:
        save_nifti(gtv_box, outputs["gtv_box"], np.uint8)
    else:
        save_nifti(sitk.Cast(box, sitk.sitkUInt8), outputs["gtv_box"], np.uint8)
    _write_json(outputs["box_json"], box_info)
    _write_npy(outputs["tensor"], tensor)
    # The same tensor for viewing: a 4D NIfTI (X, Y, Z, channel) on the box grid.
    _write_tensor_nifti(outputs["tensor_nii"], tensor, box)
    _write_npy(outputs["mask"], mask)
    staging = _staging(outputs["qc_figure"], ".png")
    try:
        qc.registration_figure(ct, pet_suv, itk, centre, crop, staging)
        os.replace(staging, outputs["qc_figure"])
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return {"registration": registration_info, "box": box_info}


def _write_json(path: str, payload: Mapping) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _staging(path: str, suffix: str) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=".", suffix=suffix, dir=Path(path).parent)
    os.close(handle)
    return staging


def _write_npy(path: str, array: np.ndarray) -> None:
    staging = _staging(path, ".npy")
    try:
        np.save(staging, array)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _write_tensor_nifti(path: str, tensor: np.ndarray, box: sitk.Image) -> None:
    """(C, X, Y, Z) tensor as a 4D float32 NIfTI with the box's RAS affine."""
    staging = _staging(path, ".nii.gz")
    try:
        image = nib.Nifti1Image(np.moveaxis(tensor, 0, -1).astype(np.float32), ras_affine(box))
        image.header.set_xyzt_units("mm")
        nib.save(image, staging)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _write_transform(transform: sitk.Transform, path: str) -> None:
    staging = _staging(path, ".txt")
    try:
        sitk.WriteTransform(transform, staging)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
