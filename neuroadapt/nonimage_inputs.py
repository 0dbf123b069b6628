"""The non-image inputs of a multimodal experiment as tensors: report text, clinical and
genetic tables (papers 2 and 4).

Ingestion gives every subjects.tsv row the path of its dataset's phenotype tables (columns
``report``, ``clinical``, ``genetics``: BIDS ``phenotype/*.tsv`` with one row per
participant). Here they become the batch entries :class:`neuroadapt.methods.base.MultimodalMethod`
reads:

- ``report_text``: the frozen text encoder's token embeddings ``(N, L, D)`` with
  ``report_text_mask`` ``(N, L)``, computed once for the cohort (the encoder never trains);
- ``clinical`` / ``genetics``: every numeric column of the table ``(N, F)``, standardised
  with the mean and sd of the fold's *training* part only (no test statistics leak in);
- ``<name>_present`` ``(N,)``: False where a participant has no row, an empty report or a
  missing value in the table (that sample's modality then counts as absent, the methods'
  missing-modality path; its values are zeros).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.experiments import NON_IMAGE_INPUTS

__all__ = ["NON_IMAGE_INPUTS", "TABLE_COLUMN", "non_image_tensors"]
#: subjects.tsv column holding the phenotype table of each non-image input.
TABLE_COLUMN = {"report_text": "report", "clinical": "clinical", "genetics": "genetics"}


def non_image_tensors(
    rows: pd.DataFrame,
    inputs: Sequence[str],
    train_index: np.ndarray,
    text_encoder: Mapping | None,
    subjects_table: str,
    where: str,
) -> dict[str, torch.Tensor]:
    """The batch entries of the experiment's non-image ``inputs`` for every row of ``rows``
    (subjects.tsv order); ``train_index`` marks the rows whose statistics standardise the
    tables."""
    tensors: dict[str, torch.Tensor] = {}
    for name in inputs:
        if name not in NON_IMAGE_INPUTS:
            continue
        table = _phenotype(rows, name, subjects_table)
        if name == "report_text":
            tensors |= _report_tensors(rows, table, text_encoder, where)
        else:
            tensors |= _table_tensors(rows, table, name, train_index)
    return tensors


def _phenotype(rows: pd.DataFrame, name: str, subjects_table: str) -> pd.DataFrame:
    """The phenotype table of input ``name``, indexed by participant_id."""
    column = TABLE_COLUMN[name]
    paths = rows[column].dropna().unique() if column in rows else []
    paths = [p for p in paths if isinstance(p, str) and p not in ("", "n/a")]
    if len(paths) != 1:
        raise InputError(
            subjects_table,
            f"input '{name}' needs one phenotype table in column '{column}', found {len(paths)}",
            f"add phenotype/{column}.tsv to the dataset (one row per participant) and re-ingest",
        )
    try:
        table = pd.read_csv(paths[0], sep="\t", dtype={"participant_id": str})
    except (OSError, ValueError) as error:
        raise InputError(paths[0], f"cannot be read as a TSV ({error})", "fix the file") from None
    if "participant_id" not in table or table.participant_id.duplicated().any():
        raise InputError(
            paths[0], "needs a participant_id column, one row per participant", "fix the table"
        )
    table.attrs["path"] = paths[0]
    return table.set_index("participant_id")


def _report_tensors(
    rows: pd.DataFrame, table: pd.DataFrame, settings: Mapping | None, where: str
) -> dict[str, torch.Tensor]:
    from neuroadapt.models.text import get_text_encoder

    if "report" not in table:
        raise InputError(table.attrs["path"], "has no 'report' column", "name it report")
    texts = table.report.reindex(rows.participant_id)
    present = texts.notna() & texts.astype(str).str.strip().ne("")
    encoder = get_text_encoder(settings or {"kind": "hashing"}, f"{where}.text_encoder")
    encoding = encoder.encode([t if ok else "" for t, ok in zip(texts, present, strict=True)])
    present_tensor = torch.tensor(present.to_numpy(bool)) & encoding.mask.any(dim=1)
    return {
        "report_text": encoding.tokens.float(),
        "report_text_mask": encoding.mask & present_tensor[:, None],
        "report_text_present": present_tensor,
    }


def _table_tensors(
    rows: pd.DataFrame, table: pd.DataFrame, name: str, train_index: np.ndarray
) -> dict[str, torch.Tensor]:
    numeric = table.apply(pd.to_numeric, errors="coerce")
    columns = [c for c in numeric if numeric[c].notna().any()]
    if not columns:
        raise InputError(table.attrs["path"], "has no numeric column", "give numeric features")
    values = numeric[columns].reindex(rows.participant_id).to_numpy(np.float64)
    present = np.isfinite(values).all(axis=1)
    fitted = values[np.intersect1d(train_index, np.flatnonzero(present))]
    if len(fitted) < 2:
        raise ConfigError(
            f"inputs.{name}", "fewer than two training subjects have these values", "check them"
        )
    mean, sd = fitted.mean(axis=0), fitted.std(axis=0)
    scaled = (values - mean) / np.where(sd > 0, sd, 1.0)  # a constant column stays 0
    scaled[~present] = 0.0
    return {
        name: torch.tensor(scaled, dtype=torch.float32),
        f"{name}_present": torch.tensor(present),
    }
