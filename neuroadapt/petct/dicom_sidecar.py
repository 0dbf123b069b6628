"""The SUV fields of a PET sidecar that dcm2niix leaves out, taken from the DICOM header.

dcm2niix writes most of BIDS-PET (tracer, radionuclide, ``InjectedRadioactivity`` in MBq,
``Units``, ``FrameTimesStart``/``FrameDuration`` and ``ScanStart`` 0, all relative to its
``AcquisitionTime``) but not the body weight (its default anonymisation drops
``PatientWeight``) nor when the tracer was injected. Both are in every scanner's PET header
(DICOM PS3.3 C.8.9: Patient Weight, Radiopharmaceutical Start (Date)Time), so this module
adds, keeping dcm2niix's time zero (the acquisition start):

- ``TimeZero`` (hh:mm:ss, the acquisition start clock), ``InjectionStart`` (s, negative:
  the injection precedes the scan), ``BodyWeight`` + ``BodyWeightUnits`` (kg);
- ``ImageDecayCorrectionTime`` from ``DecayCorrection``: START is the series start
  (QIBA's scan time, SeriesTime), ADMIN the injection; NONE sets ``ImageDecayCorrected``
  false.

What the header lacks stays out of the sidecar (listed under ``SUVFieldsMissingInDicom``),
so the SUV step asks for it by name or takes ``petct.suv.fallback``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

__all__ = ["complete_pet_sidecar", "pet_series_header"]


def _on_date(date, time) -> dt.datetime | None:
    """A DICOM date (DA) and a time (DICOM TM or dcm2niix's hh:mm:ss.ffffff) as a datetime;
    None when either is absent or unreadable (a TM alone is put on an arbitrary date)."""
    from pydicom.valuerep import DA, TM

    if not time:
        return None
    try:
        clock = dt.time.fromisoformat(time) if ":" in str(time) else TM(str(time))
        day = DA(str(date)) if date else dt.date(1900, 1, 1)
    except ValueError:
        return None
    return dt.datetime.combine(day, clock)


def _date_time(value) -> dt.datetime | None:
    """A DICOM DT (YYYYMMDDHHMMSS.ffffff) as a naive datetime; None if absent or unreadable."""
    from pydicom.valuerep import DT

    try:
        return DT(str(value)).replace(tzinfo=None) if value else None
    except ValueError:
        return None


def pet_series_header(folder: Path, sidecar: Mapping):
    """The header (pydicom Dataset, no pixels) of a PET file in ``folder`` from the series
    the dcm2niix ``sidecar`` was converted from (same SeriesNumber and SeriesDescription);
    None if there is none."""
    import pydicom

    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            continue
        if (
            header.get("Modality") == "PT"
            and int(header.get("SeriesNumber", -1)) == int(sidecar.get("SeriesNumber", -1))
            and str(header.get("SeriesDescription", "")) == sidecar.get("SeriesDescription", "")
        ):
            return header
    return None


def complete_pet_sidecar(sidecar: Mapping, header) -> dict:
    """``sidecar`` with the SUV fields from the DICOM ``header`` added (see module doc)."""
    out = dict(sidecar)
    missing = []
    reference = _on_date(header.get("AcquisitionDate"), sidecar.get("AcquisitionTime"))
    reference = reference or _on_date(header.get("SeriesDate"), header.get("SeriesTime"))
    drug = (header.get("RadiopharmaceuticalInformationSequence") or [None])[0]
    injection = None
    if drug is not None:
        injection = _date_time(drug.get("RadiopharmaceuticalStartDateTime")) or _on_date(
            header.get("SeriesDate"), drug.get("RadiopharmaceuticalStartTime")
        )
    weight = header.get("PatientWeight")
    if weight not in (None, "") and float(weight) > 0:
        out.setdefault("BodyWeight", float(weight))
        out.setdefault("BodyWeightUnits", "kg")
    elif "BodyWeight" not in out:
        missing.append("BodyWeight (PatientWeight)")
    if reference is None:
        missing.append("TimeZero (AcquisitionTime/SeriesTime)")
    else:
        out.setdefault("TimeZero", reference.strftime("%H:%M:%S"))
        if injection is None:
            missing.append("InjectionStart (RadiopharmaceuticalStartTime)")
        else:
            out.setdefault("InjectionStart", round((injection - reference).total_seconds(), 3))
        correction = str(header.get("DecayCorrection", "")).upper()
        series_start = _on_date(header.get("SeriesDate"), header.get("SeriesTime")) or reference
        if correction == "NONE":
            out["ImageDecayCorrected"] = False
            out.pop("ImageDecayCorrectionTime", None)
        elif correction == "START":
            out["ImageDecayCorrected"] = True
            out["ImageDecayCorrectionTime"] = round((series_start - reference).total_seconds(), 3)
        elif correction == "ADMIN" and "InjectionStart" in out:
            out["ImageDecayCorrected"] = True
            out["ImageDecayCorrectionTime"] = out["InjectionStart"]
    if missing:
        out["SUVFieldsMissingInDicom"] = missing
    return out
