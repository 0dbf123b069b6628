"""The samples of one cross-validation fold: model-ready image tensors, labels and roles.

Each subjects.tsv row (a subject, or one session of a subject) is one sample. Its image is
the model-ready array the preprocessing stage wrote (``(C, X, Y, Z)`` float16 ``.npy``: FA/MD
from the diffusion stage, CT/PET from the CT/PET stage); the experiment's ``inputs`` pick
channels from it. All arrays of a cohort are read once into one float32 tensor, so training
never decodes a file per epoch. The fold table (``splits/fold-<k>.tsv``) gives every
participant a role: train, validation or test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.experiments import IMAGE_CHANNELS, image_kind
from neuroadapt.subjects import read_subjects_table, row_prefix

__all__ = ["Cohort", "encode_labels", "load_cohort"]


@dataclass
class Cohort:
    """Samples of one fold: ``images`` ``(N, C, X, Y, Z)`` float32, ``labels`` ``(N,)``
    float (binary 0/1), ``roles`` and ``ids`` (participant_id, session_id) per sample."""

    images: torch.Tensor
    labels: torch.Tensor
    roles: np.ndarray
    ids: pd.DataFrame

    def indices(self, role: str) -> np.ndarray:
        """Sample indices of ``role`` (train, validation or test), in table order."""
        return np.flatnonzero(self.roles == role)


def encode_labels(
    values: pd.Series, positive_class: str | None, where: str, source: str
) -> np.ndarray:
    """Binary labels as 0/1 floats: 1 where the value equals ``positive_class``.

    Without ``positive_class`` the values must already be 0/1; a string label needs the
    config to say which class is positive (no guessing from the sort order).
    """
    text = values.astype(str)
    if positive_class is None:
        if not text.isin(["0", "1"]).all():
            found = ", ".join(sorted(text.unique())[:5])
            raise ConfigError(
                f"{where}.positive_class",
                f"the target holds {found}, not 0/1, and no positive class is named",
                f"add positive_class: <one of {found}>",
            )
        return text.eq("1").to_numpy(np.float32)
    found = set(text)
    if str(positive_class) not in found or len(found) != 2:
        raise InputError(
            source,
            f"a binary target needs exactly two classes including '{positive_class}', "
            f"found {sorted(found)}",
            f"check {where}.positive_class and the target column",
        )
    return text.eq(str(positive_class)).to_numpy(np.float32)


def load_cohort(
    subjects_table: str | Path,
    fold_table: str | Path,
    tensors: Sequence[str | Path],
    experiment: Mapping,
    where: str,
) -> Cohort:
    """Read a fold's samples. ``tensors`` are the model-ready arrays of the subjects.tsv rows,
    in table order; ``experiment`` is the config entry (inputs, target, task,
    positive_class)."""
    if experiment["task"] != "binary":
        raise ConfigError(
            f"{where}.task",
            f"training on '{experiment['task']}' targets is not built yet",
            "use task: binary",
        )
    rows = read_subjects_table(subjects_table)
    if len(rows) != len(tensors):
        raise InputError(
            subjects_table,
            f"has {len(rows)} rows but {len(tensors)} model-ready tensors were given",
            "rerun the workflow so preprocessing and ingestion agree",
        )
    for (participant, session), path in zip(
        rows[["participant_id", "session_id"]].itertuples(index=False), tensors, strict=True
    ):
        if not Path(path).name.startswith(row_prefix(participant, session) + "_"):
            raise InputError(path, f"is not the tensor of {participant}", "rerun the workflow")
    fold = pd.read_csv(fold_table, sep="\t", dtype=str)
    roles = rows.participant_id.map(dict(zip(fold.participant_id, fold.role, strict=True)))
    if roles.isna().any():
        missing = ", ".join(rows.participant_id[roles.isna()].unique()[:5])
        raise InputError(
            fold_table,
            f"has no role for {missing}",
            "rerun the splits rule after ingestion (snakemake --forcerun splits)",
        )
    labels = encode_labels(
        rows[experiment["target"]], experiment.get("positive_class"), where, str(subjects_table)
    )
    train_classes = set(labels[roles.to_numpy() == "train"])
    if len(train_classes) < 2:
        raise InputError(
            fold_table,
            f"the training part holds only class {int(train_classes.pop())}: "
            "nothing to learn to separate",
            "use fewer folds or more subjects so every training part has both classes",
        )
    kind = image_kind(experiment["inputs"], where)
    channels = [IMAGE_CHANNELS[name][1] for name in experiment["inputs"] if name in IMAGE_CHANNELS]
    images = np.stack([_read_tensor(path, kind)[channels] for path in tensors])
    return Cohort(
        images=torch.from_numpy(images.astype(np.float32)),
        labels=torch.from_numpy(labels),
        roles=roles.to_numpy(str),
        ids=rows[["participant_id", "session_id"]].reset_index(drop=True),
    )


def _read_tensor(path: str | Path, kind: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(
            path, f"cannot be read as a .npy array ({error})", "rerun its rule"
        ) from None
    if array.ndim != 4 or array.shape[0] != 2:
        raise InputError(
            path, f"has shape {array.shape}, expected (2, X, Y, Z) {kind}", "rerun its rule"
        )
    if not np.isfinite(array).all():
        raise InputError(path, "holds NaN or infinite values", "check the subject's preprocessing")
    return array
