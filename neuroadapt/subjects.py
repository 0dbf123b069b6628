"""The subjects table (``results/<dataset>/subjects.tsv``): reading it and naming its rows.

Written by ingestion (:mod:`neuroadapt.bids`), read by every later stage; kept apart so that
stages reading it need only pandas.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from neuroadapt.errors import InputError


def read_subjects_table(path: str | Path) -> pd.DataFrame:
    """Read a subjects.tsv written by :func:`neuroadapt.bids.write_outputs`."""
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=["n/a"])


def row_prefix(participant_id: str, session_id: str | None) -> str:
    """BIDS file-name prefix of a subjects.tsv row: ``sub-01`` or ``sub-01_ses-02``."""
    return participant_id + (f"_{session_id}" if isinstance(session_id, str) and session_id else "")


def row_folder(participant_id: str, session_id: str | None) -> str:
    """BIDS folder of a subjects.tsv row: ``sub-01`` or ``sub-01/ses-02``."""
    return participant_id + (f"/{session_id}" if isinstance(session_id, str) and session_id else "")


@functools.lru_cache(maxsize=16)
def _indexed(path: str, mtime_ns: int, size: int) -> tuple[pd.DataFrame, dict[str, int]]:
    table = read_subjects_table(path)
    pairs = zip(table.participant_id, table.session_id, strict=True)
    return table, {row_prefix(p, s): k for k, (p, s) in enumerate(pairs)}


def _version(path: str | Path) -> tuple[str, int, int]:
    stat = Path(path).stat()
    return str(path), stat.st_mtime_ns, stat.st_size


def cached_subjects_table(path: str | Path) -> pd.DataFrame:
    """subjects.tsv read once per version of the file (path, mtime, size): the workflow's
    input functions ask for it in every per-subject job, and reading it each time made
    planning quadratic in the subjects (7 s of a 1,000-subject dry run). Do not modify
    the returned table."""
    return _indexed(*_version(path))[0]


def cached_row(path: str | Path, prefix: str) -> pd.Series:
    """The row of ``prefix`` in subjects.tsv ``path`` (a dictionary lookup on the cached
    table, not a scan)."""
    table, rows = _indexed(*_version(path))
    if prefix not in rows:
        raise InputError(path, f"{prefix} is not in the subjects table", "rerun ingestion")
    return table.iloc[rows[prefix]]


def find_row(table: pd.DataFrame, prefix: str) -> pd.Series:
    """The subjects.tsv row whose :func:`row_prefix` is ``prefix``."""
    prefixes = [
        row_prefix(p, s) for p, s in zip(table.participant_id, table.session_id, strict=True)
    ]
    if prefix not in prefixes:
        raise InputError(None, f"{prefix} is not in the subjects table", "rerun ingestion")
    return table.iloc[prefixes.index(prefix)]
