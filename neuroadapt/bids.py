"""BIDS ingestion: index a dataset, check it, and write the subject/session table.

One row per subject and session, with the paths of every modality found (and, for DWI,
the b-value/b-vector files and JSON sidecars as BIDS inheritance resolves them), the label
and covariates from ``participants.tsv``. Downstream per-subject rules take their inputs
from this table, so each subject's chain depends only on its own files.

Problems with the data are reported with the file, what is wrong and how to fix it:
dataset-level problems stop at once; per-subject problems are collected over the whole
dataset and reported together, so one run shows every file to fix.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from neuroadapt.errors import InputError
from neuroadapt.subjects import find_row, read_subjects_table, row_folder, row_prefix  # noqa: F401

log = logging.getLogger(__name__)

SUBJECT_ID = re.compile(r"^sub-[A-Za-z0-9]+$")
IMAGE_EXTENSIONS = (".nii.gz", ".nii")
SIDECAR_SEPARATOR = ";"


@dataclass(frozen=True)
class Modality:
    """Where a modality's data lives in a BIDS dataset.

    Images are found by ``datatype`` folder + ``suffix`` (+ ``entities``), optionally inside
    ``derivatives/<derivatives>``; phenotype data by a TSV under ``phenotype/``.
    """

    name: str
    datatype: str | None = None
    suffix: str | None = None
    entities: Mapping[str, str] = field(default_factory=dict)
    derivatives: str | None = None
    phenotype_file: str | None = None
    ndim: int = 3
    sidecar_required: bool = False
    #: may also be a 4D series of frames with FrameTimesStart/FrameDuration (dynamic PET)
    dynamic: bool = False

    @property
    def is_image(self) -> bool:
        return self.phenotype_file is None


# CT has no BIDS datatype yet (BEP024 is a draft): by default it lives in a ``ct/`` folder
# with suffix ``ct`` (listed in .bidsignore), and the tumour mask in a derivatives dataset.
# Both are configurable per dataset under ``modalities:``.
DEFAULT_MODALITIES: dict[str, Modality] = {
    "dwi": Modality("dwi", datatype="dwi", suffix="dwi", ndim=4),
    "t1w": Modality("t1w", datatype="anat", suffix="T1w"),
    "ct": Modality("ct", datatype="ct", suffix="ct"),
    "pet": Modality("pet", datatype="pet", suffix="pet", sidecar_required=True, dynamic=True),
    "gtv": Modality(
        "gtv", datatype="ct", suffix="mask", entities={"label": "GTV"}, derivatives="gtv"
    ),
    "report": Modality("report", phenotype_file="reports.tsv"),
    "clinical": Modality("clinical", phenotype_file="clinical.tsv"),
    "genetics": Modality("genetics", phenotype_file="genotype.tsv"),
}


def qsiprep_modalities(qsiprep_dir: Path) -> dict[str, Modality]:
    """The DWI that QSIPrep already preprocessed (``desc-preproc``, with its .bval/.bvec) and
    its brain mask (``desc-brain_mask``), from a QSIPrep derivatives folder, replacing the
    raw DWI. QSIPrep writes one output space (T1w or ACPC); should a folder hold several,
    ingestion asks to pick one with modalities: {dwi: {entities: {space: ...}}}.
    ``qsiprep_dir``: a name under the dataset's derivatives/ or an absolute path."""
    root = str(qsiprep_dir)
    return {
        "dwi": Modality(
            "dwi",
            datatype="dwi",
            suffix="dwi",
            entities={"desc": "preproc"},
            derivatives=root,
            ndim=4,
        ),
        "dwi_mask": Modality(
            "dwi_mask",
            datatype="dwi",
            suffix="mask",
            entities={"desc": "brain"},
            derivatives=root,
        ),
    }


def modalities_for(overrides: Mapping[str, Mapping] | None) -> dict[str, Modality]:
    """Default modalities with a dataset's config overrides applied."""
    modalities = dict(DEFAULT_MODALITIES)
    for name, change in (overrides or {}).items():
        base = modalities.get(name, Modality(name))
        modalities[name] = replace(base, **dict(change))
    return modalities


@dataclass
class IngestResult:
    table: pd.DataFrame
    report: dict


@dataclass
class _Problems:
    """Per-subject problems, collected to be reported together."""

    missing: list[tuple[str, str]] = field(default_factory=list)  # (row id, message)
    invalid: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- dataset level


#: BIDS-MEG's pseudo-subject holding empty-room noise recordings.
EMPTY_ROOM = "sub-emptyroom"


def _subject_folder_names(bids_dir: Path) -> list[str]:
    """``sub-*`` folders of the dataset root, sorted, without the empty-room pseudo-subject."""
    return sorted(p.name for p in bids_dir.glob("sub-*") if p.is_dir() and p.name != EMPTY_ROOM)


def check_dataset_root(bids_dir: Path) -> dict:
    """The root exists and has a readable dataset_description.json; returns it."""
    if not bids_dir.is_dir():
        raise InputError(
            bids_dir,
            "the BIDS dataset folder does not exist",
            "set datasets.<name>.bids_dir to the folder holding dataset_description.json",
        )
    description_path = bids_dir / "dataset_description.json"
    for root in (bids_dir.parent, bids_dir.parent.parent):  # a subject or session folder
        if not description_path.is_file() and (root / "dataset_description.json").is_file():
            raise InputError(
                bids_dir,
                f"is a folder inside the BIDS dataset {root}, not its root",
                f"set datasets.<name>.bids_dir to {root}",
            )
    if not description_path.is_file():
        raise InputError(
            description_path,
            "is missing, so this folder is not a BIDS dataset root",
            "point bids_dir at the dataset root, or add dataset_description.json "
            '({"Name": ..., "BIDSVersion": "1.10.0"})',
        )
    description = read_json(description_path)
    for key in ("Name", "BIDSVersion"):
        if key not in description:
            raise InputError(
                description_path,
                f"has no '{key}' field (BIDS requires it)",
                f'add "{key}" to the file',
            )
    return description


def read_json(path: Path) -> dict:
    try:
        payload = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise InputError(
            path, f"is not valid JSON ({error})", "repair or regenerate the file"
        ) from None
    if not isinstance(payload, dict):
        raise InputError(path, "does not hold a JSON object", 'write the sidecar as {"Key": value}')
    return payload


def read_tsv(path: Path) -> pd.DataFrame:
    """A BIDS tabular file as strings, ``n/a`` and empty cells missing; an empty file, one
    that is not UTF-8 text or one saved comma-separated is refused, naming the file."""
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=["n/a", ""])
    except pd.errors.EmptyDataError:
        raise InputError(
            path, "is empty", "write a header line (participant_id, ...) and one row per subject"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(
            path,
            f"cannot be read as a tab-separated table ({error})",
            "save it as UTF-8 TSV with one header line",
        ) from None
    if len(table.columns) == 1 and ("," in table.columns[0] or ";" in table.columns[0]):
        raise InputError(
            path,
            f"has one column named '{table.columns[0]}': it was saved comma- or "
            "semicolon-separated",
            "save it with tabs between columns (BIDS .tsv files are tab-separated)",
        )
    return table


def read_participants(bids_dir: Path, columns: Sequence[str]) -> pd.DataFrame:
    """participants.tsv with IDs checked and the needed ``columns`` present."""
    path = bids_dir / "participants.tsv"
    if not path.is_file() and not columns:
        # BIDS only recommends the file; with no label or covariate to read, the subject
        # folders are the participants.
        folders = _subject_folder_names(bids_dir)
        log.warning("%s is absent; participants are the %d subject folders", path, len(folders))
        return pd.DataFrame({"participant_id": pd.Series(folders, dtype=object)})
    if not path.is_file():
        raise InputError(
            path,
            f"is missing; {', '.join(columns)} come(s) from it",
            "add participants.tsv with a participant_id column and those columns "
            "(or drop label and covariates from the dataset's config)",
        )
    table = read_tsv(path)
    if "participant_id" not in table.columns:
        raise InputError(
            path,
            "has no participant_id column",
            f"rename the ID column to participant_id (columns: {', '.join(table.columns)})",
        )
    bad = [
        pid for pid in table.participant_id if not isinstance(pid, str) or not SUBJECT_ID.match(pid)
    ]
    if bad:
        raise InputError(
            path,
            f"has invalid participant IDs {bad[:5]}",
            "use sub-<label> with letters and digits only, e.g. sub-001",
        )
    duplicated = sorted(table.participant_id[table.participant_id.duplicated()].unique())
    if duplicated:
        raise InputError(
            path,
            f"lists subjects more than once: {', '.join(duplicated)}",
            "keep one row per participant",
        )
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise InputError(
            path,
            f"has no column '{missing[0]}' (needed as label, covariate or target)",
            f"add the column, or change the config: label, covariates, the experiment target, "
            f"or splits age_column/sex_column/group_by (available: {', '.join(table.columns)})",
        )
    return table


def _check_subject_folders(bids_dir: Path, participants: pd.DataFrame) -> list[str]:
    """Subject folders on disk, each listed in participants.tsv and unique ignoring case."""
    folders = _subject_folder_names(bids_dir)
    lowered: dict[str, str] = {}
    for name in folders:
        if name.lower() in lowered:
            raise InputError(
                bids_dir / name,
                f"duplicates subject {lowered[name.lower()]} (IDs differ only in case)",
                "merge or rename one of them: case-insensitive file systems cannot hold both",
            )
        lowered[name.lower()] = name
    listed = set(participants.participant_id)
    unlisted = [name for name in folders if name not in listed]
    if unlisted:
        raise InputError(
            bids_dir / "participants.tsv",
            f"does not list subject folder(s) {', '.join(unlisted[:5])}",
            "add a row per subject folder (BIDS requires it), or remove the folders",
        )
    return folders


def _select_participants(
    participants: pd.DataFrame, include: Sequence[str], exclude: Sequence[str], path: Path
) -> pd.DataFrame:
    known = set(participants.participant_id)
    unknown = [pid for pid in include if pid not in known]
    if unknown:
        raise InputError(
            path,
            f"does not list {', '.join(unknown)} named in 'include'",
            "fix the IDs in the config's include list",
        )
    for pid in exclude:
        if pid not in known:
            log.warning("exclude names %s, which %s does not list", pid, path)
    keep = (
        participants.participant_id.isin(include)
        if include
        else pd.Series(True, index=participants.index)
    )
    keep &= ~participants.participant_id.isin(exclude)
    selected = participants[keep]
    if selected.empty:
        raise InputError(
            path,
            "no participant is left after the include/exclude filters",
            "loosen the include/exclude lists in the config",
        )
    return selected


# --------------------------------------------------------------------------- files


def check_image(path: Path, ndim: int, check_data: bool, dynamic: bool = False) -> nib.Nifti1Image:
    """Load a NIfTI header, check its dimensionality (``dynamic``: a 4D series of frames is
    allowed too) and (optionally) read all data once to catch truncated or corrupt files and
    NaN/inf values."""
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel raises many types for corrupt files
        raise InputError(
            path,
            f"cannot be read as NIfTI ({type(error).__name__}: {error})",
            "re-export the image (e.g. with dcm2niix) or exclude the subject",
        ) from None
    shape = image.shape
    effective = len(shape) if not (len(shape) == 4 and shape[3] == 1 and ndim == 3) else 3
    if effective != ndim and not (dynamic and effective == 4):
        raise InputError(
            path,
            f"is {len(shape)}D {shape}, expected a {ndim}D image",
            "give the right file for this modality"
            + (" (DWI must be a 4D series)" if ndim == 4 else ""),
        )
    if check_data:
        try:
            data = image.dataobj.get_unscaled()
        except Exception as error:
            raise InputError(
                path,
                f"is truncated or corrupt ({type(error).__name__}: {error})",
                "copy or convert the file again, or exclude the subject",
            ) from None
        if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
            count = int((~np.isfinite(data)).sum())
            raise InputError(
                path,
                f"has {count} NaN/inf voxel values",
                "replace them (e.g. with 0 outside the head) or re-export the image",
            )
    return image


def read_gradients(bval_path: Path, bvec_path: Path, n_volumes: int, image: Path) -> None:
    """Check the FSL-format b-values/b-vectors against a DWI series of ``n_volumes``."""
    try:
        bvals = np.loadtxt(bval_path, ndmin=1, dtype=float).ravel()
    except ValueError as error:
        raise InputError(
            bval_path, f"is not a row of numbers ({error})", "write b-values space-separated"
        ) from None
    try:
        bvecs = np.loadtxt(bvec_path, ndmin=2, dtype=float)
    except ValueError as error:
        raise InputError(
            bvec_path, f"is not a table of numbers ({error})", "write 3 rows of numbers"
        ) from None
    if bvecs.shape[0] != 3 and bvecs.shape[1] == 3:
        bvecs = bvecs.T
    if bvecs.shape[0] != 3:
        raise InputError(
            bvec_path,
            f"has shape {bvecs.shape}, expected 3 rows (x, y, z)",
            "write one row per axis with one column per volume (FSL format)",
        )
    if not (np.isfinite(bvals).all() and np.isfinite(bvecs).all()):
        raise InputError(
            bval_path, "b-values or b-vectors contain NaN/inf", "regenerate them from the DICOMs"
        )
    if not (len(bvals) == bvecs.shape[1] == n_volumes):
        raise InputError(
            image,
            f"has {n_volumes} volumes but {bval_path.name} lists {len(bvals)} b-values and "
            f"{bvec_path.name} {bvecs.shape[1]} b-vectors",
            "use the .bval/.bvec written with this series by the converter (one entry per volume)",
        )
    norms = np.linalg.norm(bvecs, axis=0)
    bad = np.flatnonzero((bvals > 50) & (norms < 0.5))
    if bad.size:
        raise InputError(
            bvec_path,
            f"has zero-length directions for diffusion-weighted volumes {bad[:5].tolist()}",
            "give unit vectors for every volume with b > 0",
        )
    # dipy's gradient_table accepts norms within 1e-2 of 1 (its atol); a longer or shorter
    # vector is a b-value scaling some tools write, which the tensor fit would not apply.
    bad = np.flatnonzero((bvals > 50) & (np.abs(norms - 1) > 1e-2))
    if bad.size:
        shown = ", ".join(f"{i} ({norms[i]:.3f})" for i in bad[:5])
        raise InputError(
            bvec_path,
            f"has b-vectors that are not unit length for diffusion-weighted volumes {shown}",
            "normalise each b-vector to length 1 and put the b-value scaling into the .bval",
        )


class _FileIndex:
    """Every file of one BIDS tree, indexed once by subject/session/suffix and by folder.

    pybids parses the names (one query for the whole tree); lookups are then dictionary
    hits, so ingestion time grows linearly with the number of subjects (pybids' per-subject
    queries and ``get_nearest`` each scan the whole index, which made it quadratic).
    """

    _SIDECAR_EXTENSIONS = (".json", ".bval", ".bvec")
    _NOT_MATCHED = ("suffix", "extension", "datatype")

    def __init__(self, root: Path):
        from bids import BIDSLayout, BIDSLayoutIndexer

        self.root = root
        _check_folder_links(root)
        # index_metadata=False: sidecars are resolved below, not by reading every JSON.
        layout = BIDSLayout(root, validate=False, indexer=BIDSLayoutIndexer(index_metadata=False))
        absolute_root = root.resolve()
        self.images: dict[tuple, list[Path]] = defaultdict(list)
        self.sidecars_by_folder: dict[tuple, list[tuple[Path, dict]]] = defaultdict(list)
        self.sessions: dict[str, set[str]] = defaultdict(set)
        for bids_file in layout.get(return_type="object"):
            # Keep paths relative to the root as configured, so subjects.tsv stays valid
            # when the project folder moves.
            path = root / Path(bids_file.path).relative_to(absolute_root)
            entities = bids_file.get_entities()
            subject, session = entities.get("subject"), entities.get("session")
            suffix, extension = entities.get("suffix"), entities.get("extension")
            if subject and session:
                self.sessions[subject].add(session)
            if extension in IMAGE_EXTENSIONS and subject:
                self.images[(subject, session, suffix)].append(path)
            elif extension in self._SIDECAR_EXTENSIONS:
                matched = {k: v for k, v in entities.items() if k not in self._NOT_MATCHED}
                self.sidecars_by_folder[(path.parent, suffix, extension)].append((path, matched))

    def applicable(self, image: Path, suffix: str, extension: str) -> list[Path]:
        """Sidecars of ``image`` by the BIDS inheritance principle, most general first:
        same suffix and extension, in the image's folder or one above it (up to the root),
        with entities that are a subset of the image's."""
        own = _name_entities(image)
        found = []
        folder = image.parent
        while True:
            for path, entities in self.sidecars_by_folder.get((folder, suffix, extension), []):
                if all(own.get(_BIDS_KEYS.get(k, k)) == str(v) for k, v in entities.items()):
                    found.append(path)
            if folder == self.root or folder == folder.parent:
                return found[::-1]
            folder = folder.parent


def _check_folder_links(root: Path) -> None:
    """InputError for a symbolic link to a folder that contains the link (pybids follows
    links, so every file below it would be found again at each level of the loop)."""
    import os

    for folder, names, _ in os.walk(root):
        for name in names:
            link = Path(folder) / name
            if not link.is_symlink():
                continue
            target, parent = link.resolve(), link.parent.resolve()
            if parent == target or target in parent.parents:
                raise InputError(
                    link,
                    f"is a symbolic link to {os.readlink(link)}, a folder that contains the "
                    "link itself: a loop in which every file below it is found again and again",
                    "remove the link, or point it at a folder outside the dataset",
                )


# pybids entity names -> the keys written in file names
_BIDS_KEYS = {
    "subject": "sub",
    "session": "ses",
    "acquisition": "acq",
    "reconstruction": "rec",
    "tracer": "trc",
    "ceagent": "ce",
    "direction": "dir",
    "modality": "mod",
}


def _name_entities(path: Path) -> dict[str, str]:
    """``key-value`` pairs of a BIDS file name, e.g. {'sub': '01', 'acq': 'hires'}."""
    stem = path.name.split(".")[0]
    return dict(part.split("-", 1) for part in stem.split("_") if "-" in part)


class _DatasetIndex:
    """The raw dataset's index and, on demand, those of its derivatives folders."""

    def __init__(self, bids_dir: Path):
        self.bids_dir = bids_dir
        self.raw = _FileIndex(bids_dir)
        self._derivatives: dict[str, _FileIndex | None] = {}

    def index(self, modality: Modality) -> _FileIndex | None:
        if modality.derivatives is None:
            return self.raw
        if modality.derivatives not in self._derivatives:
            root = self.bids_dir / "derivatives" / modality.derivatives
            self._derivatives[modality.derivatives] = _FileIndex(root) if root.is_dir() else None
        return self._derivatives[modality.derivatives]

    def sessions(self, subject: str) -> list[str | None]:
        return sorted(self.raw.sessions.get(subject, ())) or [None]

    def find(self, modality: Modality, subject: str, session: str | None) -> list[Path]:
        index = self.index(modality)
        if index is None:
            return []
        # Datatype by folder name (pybids knows no ``ct`` datatype), entities by file name
        # (pybids knows no ``label`` entity).
        return sorted(
            path
            for path in index.images.get((subject, session, modality.suffix), [])
            if path.parent.name == modality.datatype and _matches_entities(path, modality.entities)
        )

    def sidecars(self, modality: Modality, image: Path, extension: str) -> list[Path]:
        """Sidecars that apply to ``image`` by BIDS inheritance, most general first."""
        return self.index(modality).applicable(image, modality.suffix, extension)


def _matches_entities(path: Path, entities: Mapping[str, str]) -> bool:
    """The file name carries every ``key-value`` pair, e.g. ``label-GTV``."""
    return all(f"_{k}-{v}_" in f"_{path.name.split('.')[0]}_" for k, v in entities.items())


def merge_sidecars(paths: Iterable[str | Path]) -> dict:
    """Merge JSON sidecars given most general first (the ``*_sidecars`` column)."""
    merged: dict = {}
    for path in paths:
        merged.update(read_json(Path(path)))
    return merged


# --------------------------------------------------------------------------- ingestion


def ingest(
    bids_dir: str | Path,
    required: Sequence[str],
    label: str | None = None,
    covariates: Sequence[str] = (),
    required_columns: Sequence[str] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    on_missing_modality: str = "drop",
    modality_overrides: Mapping[str, Mapping] | None = None,
    check_image_data: bool = True,
    qsiprep_dir: str | Path | None = None,
) -> IngestResult:
    """Index and check a BIDS dataset; return the subject/session table and a report.

    ``required`` are the modalities the experiments need (e.g. ``["dwi", "t1w"]``): a row
    lacking one is dropped with a warning or fails the run (``on_missing_modality``).
    Present-but-broken files always fail. Other known modalities are recorded when found.
    ``qsiprep_dir`` (absolute, or relative to ``bids_dir``): take the DWI, gradients and
    brain mask QSIPrep preprocessed instead of the raw DWI (:func:`qsiprep_modalities`).
    """
    bids_dir = Path(bids_dir)
    description = check_dataset_root(bids_dir)
    modalities = modalities_for(modality_overrides)
    if qsiprep_dir is not None:
        qsiprep_root = bids_dir / qsiprep_dir  # an absolute path stays as it is
        if not qsiprep_root.is_dir():
            raise InputError(
                qsiprep_root,
                "is not a folder (qsiprep_dir must name QSIPrep's output folder)",
                "give the folder holding QSIPrep's sub-*/dwi outputs, absolute or relative "
                "to bids_dir, e.g. derivatives/qsiprep",
            )
        try:  # inside the dataset's derivatives/: its name there, so paths stay relative
            location = qsiprep_root.relative_to(bids_dir / "derivatives")
        except ValueError:
            location = qsiprep_root.resolve()
        modalities |= qsiprep_modalities(location)
        if "dwi" in required:
            required = [*required, "dwi_mask"]
    unknown = [name for name in required if name not in modalities]
    if unknown:
        raise InputError(
            None,
            f"unknown modality '{unknown[0]}'",
            f"use one of {', '.join(modalities)} or declare it under modalities:",
        )
    columns = list(dict.fromkeys([*([label] if label else []), *required_columns, *covariates]))
    participants = read_participants(bids_dir, columns)
    # BIDS-MEG's empty-room recordings live in sub-emptyroom; no person, so never a row
    participants = participants[participants.participant_id != EMPTY_ROOM]
    folders = _check_subject_folders(bids_dir, participants)
    participants_path = bids_dir / "participants.tsv"
    selected = _select_participants(participants, include, exclude, participants_path)

    index = _DatasetIndex(bids_dir)
    phenotypes = _read_phenotypes(bids_dir, modalities)
    problems, unused = _Problems(), _Problems()
    rows = []
    for record in selected.itertuples(index=False):
        pid = record.participant_id
        subject = pid.removeprefix("sub-")
        sessions = index.sessions(subject) if pid in folders else [None]
        for session in sessions:
            row_id = pid + (f"_ses-{session}" if session else "")
            row = {"participant_id": pid, "session_id": f"ses-{session}" if session else None}
            for column in columns:
                row[column] = getattr(record, column)
            for modality in modalities.values():
                # A modality no experiment needs never blocks a subject: its problems are
                # warnings, and its column stays empty for that row.
                needed = modality.name in required
                found = _find_modality(
                    index,
                    phenotypes,
                    modality,
                    subject,
                    session,
                    pid,
                    check_image_data,
                    problems if needed else unused,
                    row_id,
                )
                row.update(found)
            missing = [name for name in required if not row.get(name)]
            if label and pd.isna(row[label]):
                missing.append(f"label '{label}'")
            for name in missing:
                problems.missing.append((row_id, name))
            row["_missing"] = missing
            rows.append(row)

    for message in unused.invalid:
        log.warning("ignored (no experiment uses this modality): %s", message)
    if problems.invalid:
        raise InputError(
            bids_dir,
            f"{len(problems.invalid)} file problem(s) found",
            "repair or replace the files listed, or exclude those subjects with exclude: [sub-...]",
            problems.invalid,
        )
    dropped = [row for row in rows if row["_missing"]]
    if dropped and on_missing_modality == "fail":
        raise InputError(
            bids_dir,
            f"{len(dropped)} subject/session(s) lack data the experiments need",
            "add the data, exclude the subjects, or set on_missing_modality: drop",
            [f"{rid}: no {name}" for rid, name in problems.missing],
        )
    for row in dropped:
        log.warning("dropping %s: no %s", _row_id(row), ", ".join(row["_missing"]))
    kept = [row for row in rows if not row["_missing"]]
    if not kept:
        raise InputError(
            bids_dir,
            f"no subject has every modality the experiments need ({', '.join(required)})",
            "check the modality conventions under modalities:",
        )
    table = pd.DataFrame(kept).drop(columns="_missing")
    table = table[_column_order(table, modalities)]
    if label:
        _check_classes(table[label], label, participants_path)

    report = {
        "bids_dir": str(bids_dir),
        "dataset_name": description.get("Name"),
        "bids_version": description.get("BIDSVersion"),
        "participants_listed": int(len(participants)),
        "participants_selected": int(len(selected)),
        "rows_kept": int(len(table)),
        "subjects_kept": int(table.participant_id.nunique()),
        "required_modalities": list(required),
        "modalities_found": {
            name: int(table[name].notna().sum()) for name in modalities if name in table
        },
        "dropped": [{"id": _row_id(row), "missing": row["_missing"]} for row in dropped],
        "ignored_problems": unused.invalid,  # of modalities no experiment uses
        "label": label,
        "label_counts": {
            str(k): int(v) for k, v in table[label].value_counts().sort_index().items()
        }
        if label
        else {},
    }
    return IngestResult(table=table, report=report)


def _row_id(row: Mapping) -> str:
    return row["participant_id"] + (f"_{row['session_id']}" if row.get("session_id") else "")


def _column_order(table: pd.DataFrame, modalities: Mapping[str, Modality]) -> list[str]:
    """IDs, then participants.tsv columns, then the paths of the modalities found."""
    generated = {f"{name}{tail}" for name in modalities for tail in _PATH_COLUMN_TAILS}
    first = ["participant_id", "session_id"]
    rest = [c for c in table.columns if c not in first and c not in generated]
    paths = [c for c in table.columns if c in generated and table[c].notna().any()]
    return first + rest + paths


_PATH_COLUMN_TAILS = ("", "_sidecars", "_bval", "_bvec")


def _read_phenotypes(bids_dir: Path, modalities: Mapping[str, Modality]) -> dict[str, set[str]]:
    """Participant IDs present in each phenotype file (missing files give no IDs)."""
    present = {}
    for name, modality in modalities.items():
        if modality.is_image:
            continue
        path = bids_dir / "phenotype" / modality.phenotype_file
        if not path.is_file():
            present[name] = set()
            continue
        table = read_participants_like(path)
        present[name] = set(table.participant_id)
    return present


def read_participants_like(path: Path) -> pd.DataFrame:
    """A phenotype TSV: must have participant_id, one row per participant."""
    table = read_tsv(path)
    if "participant_id" not in table.columns:
        raise InputError(
            path, "has no participant_id column", "add it (BIDS phenotype files need it)"
        )
    duplicated = sorted(table.participant_id[table.participant_id.duplicated()].unique())
    if duplicated:
        raise InputError(
            path,
            f"lists {', '.join(duplicated[:5])} more than once",
            "keep one row per participant",
        )
    return table


def _find_modality(
    index, phenotypes, modality, subject, session, pid, check_data, problems, row_id
) -> dict:
    """Columns for one modality of one row; invalid files are recorded in ``problems``."""
    name = modality.name
    if not modality.is_image:
        # A participant without a row in an existing phenotype table keeps the subject: that
        # modality is missing for them alone, which the multimodal methods handle per sample
        # (neuroadapt.nonimage_inputs); only a dataset without the table lacks it.
        if phenotypes[name]:
            return {name: str(index.bids_dir / "phenotype" / modality.phenotype_file)}
        return {}
    paths = index.find(modality, subject, session)
    if not paths:
        return {}
    if len(paths) > 1:
        problems.invalid.append(
            f"{row_id}: {len(paths)} {name} images ({', '.join(p.name for p in paths)}); "
            f"pick one with modalities: {{{name}: {{entities: {{acq: ...}}}}}}"
        )
        return {}
    image_path = paths[0]
    columns = {name: str(image_path)}
    try:
        image = check_image(image_path, modality.ndim, check_data, modality.dynamic)
        sidecars = index.sidecars(modality, image_path, ".json")
        for sidecar in sidecars:
            read_json(sidecar)
        if modality.dynamic and len(image.shape) == 4 and image.shape[3] > 1:
            from neuroadapt.petct.frames import check_frame_times

            check_frame_times(merge_sidecars(sidecars), image.shape[3], image_path)
        if modality.sidecar_required and not sidecars:
            raise InputError(
                image_path,
                "has no JSON sidecar (BIDS requires one for this modality)",
                f"add {image_path.name.split('.')[0]}.json with the acquisition metadata",
            )
        if sidecars:
            columns[f"{name}_sidecars"] = SIDECAR_SEPARATOR.join(str(p) for p in sidecars)
        if name == "dwi":
            bval = index.sidecars(modality, image_path, ".bval")
            bvec = index.sidecars(modality, image_path, ".bvec")
            if not bval or not bvec:
                which = ".bval" if not bval else ".bvec"
                raise InputError(
                    image_path,
                    f"has no {which} file (not beside it nor inherited)",
                    f"add {image_path.name.split('.')[0]}{which} written by the converter",
                )
            read_gradients(bval[-1], bvec[-1], image.shape[3], image_path)
            columns["dwi_bval"], columns["dwi_bvec"] = str(bval[-1]), str(bvec[-1])
    except InputError as error:
        problems.invalid.append(str(error))
        return {}
    return columns


def _check_classes(labels: pd.Series, label: str, path: Path) -> None:
    counts = labels.value_counts()
    if len(counts) < 2:
        only = f" (only '{counts.index[0]}')" if len(counts) else ""
        raise InputError(
            path,
            f"column '{label}' has fewer than two classes among the kept subjects{only}",
            "a classifier needs at least two classes: check the label column and filters",
        )


def write_outputs(result: IngestResult, table_path: str | Path, report_path: str | Path) -> None:
    """Write subjects.tsv and the validation report (JSON), each atomically."""
    from neuroadapt.io import atomic_write_text

    atomic_write_text(
        table_path, result.table.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n")
    )
    atomic_write_text(report_path, json.dumps(result.report, indent=2, sort_keys=True) + "\n")
