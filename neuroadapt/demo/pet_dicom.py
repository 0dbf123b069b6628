"""A PET image written as a DICOM PET series (classic PET Image Storage, one file per slice
and frame), for testing the ``dicom`` stage where no public PET DICOM series is at hand.

The header carries what a scanner export carries for SUV: units (BQML), decay correction
(to the series start), the radiopharmaceutical sequence (tracer, radionuclide code, total
dose in Bq, half-life, injection time), patient weight, series and acquisition times, and,
for a dynamic series, each frame's reference time and duration. Written with pydicom; the
tags and their meaning follow DICOM PS3.3 C.8.9 (PET Series, PET Isotope, PET Image).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PetDicomHeader", "write_pet_series"]

#: DICOM PET Image Storage SOP class
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
#: radionuclide codes (SNOMED, as scanners write them) and half-lives in seconds
RADIONUCLIDES = {
    "F18": ("C-111A1", "^18^Fluorine", 6586.2),
    "C11": ("C-105A1", "^11^Carbon", 1221.8),
    "Ga68": ("C-131A3", "^68^Gallium", 4062.6),
}


@dataclass(frozen=True)
class PetDicomHeader:
    """What the series' header says about the acquisition (clock times as datetimes)."""

    injection_time: dt.datetime
    series_start: dt.datetime  # decay correction reference (DecayCorrection START)
    injected_bq: float
    weight_kg: float
    radionuclide: str = "F18"
    tracer: str = "Fluorodeoxyglucose"
    patient_id: str = "demo"
    manufacturer: str = "neuroadapt demo"


def _time(value: dt.datetime) -> str:
    return value.strftime("%H%M%S.%f")[:13]


def write_pet_series(
    activity: np.ndarray,
    affine: np.ndarray,
    header: PetDicomHeader,
    folder: str | Path,
    frame_starts_s: Sequence[float] = (0.0,),
    frame_durations_s: Sequence[float] = (300.0,),
) -> list[Path]:
    """Write ``activity`` (Bq/mL, (X, Y, Z) or (X, Y, Z, frames), voxel axes placed by the
    RAS ``affine``) as a PET series in ``folder``. Frame starts are seconds after
    ``header.series_start``. Returns the files written."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    data = np.asarray(activity, float)
    if data.ndim == 3:
        data = data[..., None]
    n_frames = data.shape[3]
    if not len(frame_starts_s) == len(frame_durations_s) == n_frames:
        raise ValueError(f"{n_frames} frames need as many frame starts and durations")
    code, meaning, half_life = RADIONUCLIDES[header.radionuclide]
    linear = np.asarray(affine, float)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    lps = RAS_TO_LPS @ (linear / spacing)  # voxel axes as LPS unit vectors
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    written = []
    for frame in range(n_frames):
        start = header.series_start + dt.timedelta(seconds=float(frame_starts_s[frame]))
        for k in range(data.shape[2]):
            # DICOM rows run along voxel axis j, columns along i
            plane = data[:, :, k, frame].T
            top = max(float(plane.max()), 1e-6)
            slope = top / 32767.0
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = PET_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = PET_IMAGE_STORAGE
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.FrameOfReferenceUID = frame_of_reference
            ds.Modality = "PT"
            ds.Manufacturer = header.manufacturer
            ds.SeriesDescription = "PET AC dynamic" if n_frames > 1 else "PET AC static"
            ds.PatientID = ds.PatientName = header.patient_id
            ds.PatientWeight = f"{header.weight_kg:.1f}"
            ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = header.series_start.strftime(
                "%Y%m%d"
            )
            ds.StudyTime = ds.SeriesTime = _time(header.series_start)
            ds.AcquisitionTime = _time(start)
            ds.SeriesNumber, ds.AcquisitionNumber = 1, frame + 1
            ds.InstanceNumber = frame * data.shape[2] + k + 1
            ds.ImageIndex = ds.InstanceNumber
            ds.SeriesType = ["DYNAMIC" if n_frames > 1 else "STATIC", "IMAGE"]
            ds.Units = "BQML"
            ds.CountsSource = "EMISSION"
            ds.DecayCorrection = "START"
            ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM", "NORM"]
            ds.NumberOfSlices = data.shape[2]
            ds.NumberOfTimeSlices = n_frames
            ds.FrameReferenceTime = f"{1000 * frame_starts_s[frame]:.0f}"
            ds.ActualFrameDuration = int(round(1000 * frame_durations_s[frame]))
            decay_to_start = 2.0 ** (-float(frame_starts_s[frame]) / half_life)
            ds.DecayFactor = f"{1 / decay_to_start:.6f}"
            nuclide = pydicom.Dataset()
            nuclide.CodeValue, nuclide.CodingSchemeDesignator = code, "SRT"
            nuclide.CodeMeaning = meaning
            drug = pydicom.Dataset()
            drug.Radiopharmaceutical = header.tracer
            drug.RadiopharmaceuticalStartTime = _time(header.injection_time)
            drug.RadiopharmaceuticalStartDateTime = header.injection_time.strftime(
                "%Y%m%d%H%M%S.%f"
            )
            drug.RadionuclideTotalDose = f"{header.injected_bq:.1f}"
            drug.RadionuclideHalfLife = f"{half_life}"
            drug.RadionuclidePositronFraction = "0.9686"
            drug.RadionuclideCodeSequence = [nuclide]
            ds.RadiopharmaceuticalInformationSequence = [drug]
            origin = RAS_TO_LPS @ (np.asarray(affine, float) @ [0, 0, k, 1])[:3]
            ds.ImagePositionPatient = [f"{v:.4f}" for v in origin]
            ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*lps[:, 0], *lps[:, 1])]
            ds.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[0]:.4f}"]
            ds.SliceThickness = f"{spacing[2]:.4f}"
            ds.SliceLocation = f"{origin[2]:.4f}"
            ds.Rows, ds.Columns = plane.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
            ds.PixelRepresentation = 1
            ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.8g}", "0"
            ds.PixelData = np.round(plane / float(ds.RescaleSlope)).astype("<i2").tobytes()
            path = folder / f"PT{ds.InstanceNumber:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
    return written
