"""The ``dicom`` stage: a folder of DICOM exports to a BIDS dataset that ingestion reads.

Conversion is dcm2niix's (the PyPI wheel ships the binary; vendor quirks such as Siemens
mosaics, GE's private diffusion tags and b-vector orientation are handled there), and the
mapping from series to BIDS names is dcm2bids' configuration file, which users of dcm2bids
already write (``{"descriptions": [{"datatype": "dwi", "suffix": "dwi", "criteria":
{"SeriesDescription": "*DTI*"}}, ...]}``); dcm2bids runs dcm2niix and applies it. Written
here: the walk over subjects and sessions, the dataset files BIDS requires, the
participants table from the user's own table, and messages that name the folder and fix.

Layout of ``dicom_dir``: one folder per participant (``sub-01`` or ``01``), each holding
that participant's DICOM files at any depth, or ``ses-*`` folders that do.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from neuroadapt.errors import InputError
from neuroadapt.io import atomic_directory

__all__ = ["DicomSubject", "convert_dataset", "dicom_subjects", "read_mapping"]

log = logging.getLogger(__name__)

LABEL = re.compile(r"^[A-Za-z0-9]+$")
#: dcm2bids' scratch folder inside its output; not part of the dataset.
DCM2BIDS_SCRATCH = "tmp_dcm2bids"


@dataclass(frozen=True)
class DicomSubject:
    participant: str  # label without "sub-"
    session: str | None  # label without "ses-"
    folder: Path


def _label(name: str, prefix: str, folder: Path) -> str:
    label = name.removeprefix(prefix)
    if not LABEL.match(label):
        raise InputError(
            folder,
            f"'{name}' is not a BIDS {prefix.rstrip('-')} label (letters and digits only)",
            f"rename the folder, e.g. {prefix}01",
        )
    return label


def dicom_subjects(dicom_dir: str | Path) -> list[DicomSubject]:
    """Every participant (and session) folder of ``dicom_dir``, sorted."""
    dicom_dir = Path(dicom_dir)
    if not dicom_dir.is_dir():
        raise InputError(
            dicom_dir,
            "the DICOM folder does not exist",
            "set datasets.<name>.dicom_dir to the folder with one sub-folder per participant",
        )
    subjects = []
    for folder in sorted(
        p for p in dicom_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):
        participant = _label(folder.name, "sub-", folder)
        children = [p for p in folder.iterdir() if p.is_dir()]
        sessions = [p for p in children if p.name.startswith("ses-")]
        if sessions and len(sessions) == len(children):
            for session in sorted(sessions):
                subjects.append(
                    DicomSubject(participant, _label(session.name, "ses-", session), session)
                )
        else:
            subjects.append(DicomSubject(participant, None, folder))
    if not subjects:
        raise InputError(
            dicom_dir,
            "has no participant folders",
            "put each participant's DICOM files in a folder of its own (sub-01/, sub-02/, ...)",
        )
    labels = [s.participant.lower() for s in subjects if s.session is None]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise InputError(
            dicom_dir,
            f"has folders for participant(s) {', '.join(duplicated)} with and without 'sub-' "
            "or differing in case",
            "keep one folder per participant",
        )
    return subjects


def read_mapping(path: str | Path) -> dict:
    """A dcm2bids configuration file, checked for what the conversion needs."""
    path = Path(path)
    try:
        mapping = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            path,
            "the dcm2bids configuration file does not exist",
            "set datasets.<name>.dicom_mapping",
        ) from None
    except json.JSONDecodeError as error:
        raise InputError(path, f"is not valid JSON ({error})", "repair the file") from None
    descriptions = mapping.get("descriptions") if isinstance(mapping, dict) else None
    if not isinstance(descriptions, list) or not descriptions:
        raise InputError(
            path,
            "has no 'descriptions' list (dcm2bids' mapping from series to BIDS names)",
            'write {"descriptions": [{"datatype": "dwi", "suffix": "dwi", "criteria": '
            '{"SeriesDescription": "*DTI*"}}]}',
        )
    for k, entry in enumerate(descriptions):
        missing = [key for key in ("datatype", "suffix", "criteria") if key not in entry]
        if missing:
            raise InputError(
                path,
                f"description {k + 1} has no {', '.join(missing)}",
                "give each description a datatype, a suffix and criteria",
            )
    return mapping


def _tool_environment() -> dict:
    """The environment for dcm2bids: dcm2niix of this Python's environment on PATH first
    (the dcm2niix wheel puts its binary beside the interpreter)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _convert_subject(subject: DicomSubject, mapping_path: Path, out_dir: Path) -> list[str]:
    """Run dcm2bids for one participant/session into ``out_dir``; the BIDS files it wrote."""
    command = [
        str(Path(sys.executable).parent / "dcm2bids"),
        "-d",
        str(subject.folder),
        "-p",
        subject.participant,
        "-c",
        str(mapping_path),
        "-o",
        str(out_dir),
        "--force_dcm2bids",
    ]
    if subject.session:
        command += ["-s", subject.session]
    result = subprocess.run(
        command, env=_tool_environment(), capture_output=True, text=True, check=False
    )
    folder = out_dir / f"sub-{subject.participant}"
    if subject.session:
        folder = folder / f"ses-{subject.session}"
    written = (
        sorted(str(p.relative_to(out_dir)) for p in folder.rglob("*") if p.is_file())
        if folder.is_dir()
        else []
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise InputError(
            subject.folder,
            f"dcm2bids failed (exit {result.returncode}): {tail}",
            "check that the folder holds readable DICOM files",
        )
    if not written:
        series = sorted(
            {
                json.loads(p.read_text()).get("SeriesDescription", p.stem)
                for p in (out_dir / DCM2BIDS_SCRATCH).rglob("*.json")
                if f"sub-{subject.participant}" in str(p)
            }
        )
        raise InputError(
            subject.folder,
            "no series matched a description of the dcm2bids configuration"
            + (f" (its series: {', '.join(series)})" if series else " (dcm2niix found no series)"),
            "add a description whose criteria match one of these series",
        )
    return written


def _complete_pet_sidecars(subject: DicomSubject, files: list[str], out_dir: Path) -> dict:
    """Add the SUV fields dcm2niix leaves out to every PET sidecar written for ``subject``
    (neuroadapt.petct.dicom_sidecar); per sidecar, the fields added and those the DICOM
    header lacks."""
    from neuroadapt.petct.dicom_sidecar import complete_pet_sidecar, pet_series_header

    done = {}
    for name in files:
        if not name.endswith("_pet.json"):
            continue
        path = out_dir / name
        sidecar = json.loads(path.read_text())
        header = pet_series_header(subject.folder, sidecar)
        if header is None:
            raise InputError(
                subject.folder,
                f"has no PET DICOM file of series {sidecar.get('SeriesNumber')} "
                f"'{sidecar.get('SeriesDescription')}', which {name} was converted from",
                "keep each series' DICOM files unchanged in the participant folder",
            )
        completed = complete_pet_sidecar(sidecar, header)
        path.write_text(json.dumps(completed, indent=2) + "\n")
        missing = completed.get("SUVFieldsMissingInDicom", [])
        for field in missing:
            log.warning("%s: the DICOM header has no %s, which SUV needs", name, field)
        done[name] = {"added": sorted(set(completed) - set(sidecar)), "missing": missing}
    return done


def _participants(subjects: list[DicomSubject], table_path: str | Path | None) -> pd.DataFrame:
    """participants.tsv: the user's table restricted to the converted participants, or their
    IDs alone without one; a converted participant missing from the table is an error."""
    ids = sorted({f"sub-{s.participant}" for s in subjects})
    if table_path is None:
        return pd.DataFrame({"participant_id": ids})
    from neuroadapt.bids import read_tsv

    table = read_tsv(Path(table_path))
    if "participant_id" not in table.columns:
        raise InputError(
            table_path, "has no participant_id column", "name the ID column participant_id"
        )
    table["participant_id"] = [
        pid if str(pid).startswith("sub-") else f"sub-{pid}" for pid in table.participant_id
    ]
    missing = [pid for pid in ids if pid not in set(table.participant_id)]
    if missing:
        raise InputError(
            table_path,
            f"has no row for converted participant(s) {', '.join(missing[:5])}",
            "add a row per participant folder of dicom_dir",
        )
    return table[table.participant_id.isin(ids)].sort_values("participant_id")


def convert_dataset(
    dicom_dir: str | Path,
    mapping_path: str | Path,
    out_dir: str | Path,
    participants_table: str | Path | None = None,
    name: str = "converted from DICOM",
) -> dict:
    """Convert every participant folder of ``dicom_dir`` into the BIDS dataset ``out_dir``
    (written whole or not at all); returns a summary (per folder: files written, seconds)."""
    mapping_path = Path(mapping_path).resolve()
    read_mapping(mapping_path)
    subjects = dicom_subjects(dicom_dir)
    participants = _participants(subjects, participants_table)
    summary = {"dicom_dir": str(dicom_dir), "mapping": str(mapping_path), "subjects": []}
    with atomic_directory(out_dir) as staging:
        for subject in subjects:
            started = time.perf_counter()
            files = _convert_subject(subject, mapping_path, staging)
            pet = _complete_pet_sidecars(subject, files, staging)
            summary["subjects"].append(
                {
                    "participant_id": f"sub-{subject.participant}",
                    "session_id": f"ses-{subject.session}" if subject.session else None,
                    "folder": str(subject.folder),
                    "files": files,
                    "seconds": round(time.perf_counter() - started, 2),
                }
                | ({"pet_sidecars": pet} if pet else {})
            )
            log.info(
                "%s: %d files in %.1f s",
                subject.folder,
                len(files),
                summary["subjects"][-1]["seconds"],
            )
        shutil.rmtree(staging / DCM2BIDS_SCRATCH, ignore_errors=True)
        participants.to_csv(staging / "participants.tsv", sep="\t", index=False, na_rep="n/a")
        description = {
            "Name": name,
            "BIDSVersion": "1.10.0",
            "DatasetType": "raw",
            "GeneratedBy": [
                {"Name": "dcm2bids", "Version": _version("dcm2bids")},
                {"Name": "dcm2niix", "Version": _version("dcm2niix")},
            ],
        }
        (staging / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")
        (staging / "conversion.json").write_text(json.dumps(summary, indent=2) + "\n")
        (staging / ".bidsignore").write_text("conversion.json\n")
    return summary


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
