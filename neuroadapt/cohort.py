"""The samples of one cross-validation fold: model-ready image tensors, targets and roles.

Each subjects.tsv row (a subject, or one session of a subject) is one sample. Its image is
the model-ready array the preprocessing stage wrote (``(C, X, Y, Z)`` float16 ``.npy``: FA/MD
from the diffusion stage, CT/PET from the CT/PET stage); the experiment's ``inputs`` pick
channels from it. The arrays are memory-mapped (:mod:`neuroadapt.image_stack`): a batch
reads its own samples, so memory does not grow with the cohort. The fold table
(``splits/fold-<k>.tsv``) gives every participant a role: train, validation or test.

Targets by task: ``binary``, a 0/1 label per sample; ``multilabel`` (paper 3), one 0/1
column of participants.tsv per label (finding), an ``(N, L)`` matrix;
``segmentation+survival`` (paper 5), the GTV mask in the same box (``uint8 (X, Y, Z)``
``.npy`` beside the tensor) and the survival time and event of the experiment's
``survival`` columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.experiments import IMAGE_CHANNELS, image_kind
from neuroadapt.image_stack import ImageStack
from neuroadapt.nonimage_inputs import non_image_tensors
from neuroadapt.subjects import read_subjects_table, row_prefix

__all__ = ["TRAINABLE_TASKS", "Cohort", "encode_labels", "load_cohort", "multilabel_targets"]

#: Tasks the train rule can train.
TRAINABLE_TASKS = ("binary", "multilabel", "segmentation+survival")


@dataclass
class Cohort:
    """Samples of one fold: ``images`` ``(N, C, X, Y, Z)`` (an ImageStack; indexing it gives
    float32 tensors) whose channels are the
    experiment's image ``inputs`` (``channels``), ``labels`` ``(N,)`` float (binary 0/1; the
    event for survival; multilabel ``(N, L)`` 0/1, label ``k`` being ``label_names[k]``),
    ``roles`` and ``ids`` (participant_id, session_id) per sample.
    Segmentation+survival adds ``masks`` ``(N, 1, X, Y, Z)`` float 0/1, ``times`` ``(N,)``
    (the survival column's unit), ``events`` ``(N,)`` 0/1 and ``spacing_mm`` ``(N,)``.
    ``extra`` holds the non-image inputs (report text, clinical and genetic tables) as
    :mod:`neuroadapt.nonimage_inputs` makes them, keyed as the multimodal methods read them."""

    images: ImageStack
    labels: torch.Tensor
    roles: np.ndarray
    ids: pd.DataFrame
    channels: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ()
    masks: torch.Tensor | None = None
    times: torch.Tensor | None = None
    events: torch.Tensor | None = None
    spacing_mm: np.ndarray | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.images, torch.Tensor):  # a cohort built in memory
            self.images = ImageStack.from_tensor(self.images)

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


def participants_file(subjects_table: str | Path) -> str:
    """The participants.tsv that ingestion copied ``subjects_table``'s columns from (named in
    its validation.json), or a description of it when that file is not there."""
    try:
        report = json.loads(Path(subjects_table).with_name("validation.json").read_text())
        return str(Path(report["bids_dir"]) / "participants.tsv")
    except (OSError, ValueError, KeyError, TypeError):
        return f"participants.tsv (copied into {subjects_table})"


def multilabel_targets(
    rows: pd.DataFrame, columns: Sequence[str], subjects_table: str | Path, where: str
) -> np.ndarray:
    """The multi-label target ``(N, L)`` float32 0/1 of subjects.tsv ``rows``: one column of
    participants.tsv per label, each holding 0 (absent) or 1 (present) for every row.

    A missing column, or any other value (n/a and empty included), is an InputError naming
    participants.tsv, the column and the rows."""
    source = participants_file(subjects_table)
    matrix = []
    for column in columns:
        if column not in rows.columns:
            raise InputError(
                source,
                f"has no column '{column}' (a label of the multilabel target {where}.target; "
                f"{subjects_table} lacks it too)",
                f"add a 0/1 column '{column}' to participants.tsv and rerun ingestion "
                "(snakemake --forcerun ingest), or drop the label from the target",
            )
        values = rows[column]
        bad = values.isna() | ~values.astype(str).isin(["0", "1"])
        if bad.any():
            found = ", ".join(
                f"{'n/a' if pd.isna(v) else repr(v)} ({pid})"
                for v, pid in zip(values[bad][:5], rows.participant_id[bad][:5], strict=True)
            )
            raise InputError(
                source,
                f"column '{column}' (a label of {where}.target) holds values other than 0/1: "
                f"{found}",
                "write 1 where the finding is present and 0 where it is absent, for every "
                "subject (exclude subjects without a reading: datasets.<name>.exclude)",
            )
        matrix.append(values.astype(str).eq("1").to_numpy(np.float32))
    return np.stack(matrix, axis=1)


def check_training_labels(
    labels: np.ndarray, names: Sequence[str], roles: np.ndarray, fold_table: str | Path
) -> None:
    """Every label of a multi-label target must take both values in the training part."""
    train = labels[roles == "train"]
    for k, name in enumerate(names):
        values = set(train[:, k].astype(int).tolist())
        if len(values) < 2:
            raise InputError(
                fold_table,
                f"label '{name}' is {values.pop() if values else 'absent'} for every subject of "
                "the training part: nothing to learn for it",
                "use fewer folds or more subjects so every training part has subjects with "
                "and without each finding, or drop the label from the target",
            )


def load_cohort(
    subjects_table: str | Path,
    fold_table: str | Path,
    tensors: Sequence[str | Path],
    experiment: Mapping,
    where: str,
    masks: Sequence[str | Path] | None = None,
) -> Cohort:
    """Read a fold's samples. ``tensors`` (and, for segmentation, ``masks``) are the
    model-ready arrays of the subjects.tsv rows, in table order; ``experiment`` is the config
    entry (inputs, target, task, positive_class, survival)."""
    task = experiment["task"]
    if task not in TRAINABLE_TASKS:
        raise ConfigError(
            f"{where}.task",
            f"training on '{task}' targets is not built yet",
            f"use one of: {', '.join(TRAINABLE_TASKS)}",
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
    kind = image_kind(experiment["inputs"], where)
    names = tuple(name for name in experiment["inputs"] if name in IMAGE_CHANNELS)
    channels = [IMAGE_CHANNELS[name][1] for name in names]
    images = ImageStack.from_files(tensors, channels)
    _check_shapes(images, tensors, kind)
    cohort = Cohort(
        images=images,
        labels=torch.empty(0),
        roles=roles.to_numpy(str),
        ids=rows[["participant_id", "session_id"]].reset_index(drop=True),
        channels=names,
    )
    if task == "binary":
        labels = encode_labels(
            rows[experiment["target"]], experiment.get("positive_class"), where, str(subjects_table)
        )
        train_classes = set(labels[cohort.roles == "train"])
        if len(train_classes) < 2:
            raise InputError(
                fold_table,
                f"the training part holds only class {int(train_classes.pop())}: "
                "nothing to learn to separate",
                "use fewer folds or more subjects so every training part has both classes",
            )
        cohort.labels = torch.from_numpy(labels)
        cohort.extra = non_image_tensors(
            rows,
            experiment["inputs"],
            cohort.indices("train"),
            experiment.get("text_encoder"),
            str(subjects_table),
            where,
        )
        return cohort
    if task == "multilabel":
        names = tuple(experiment["target"])
        labels = multilabel_targets(rows, names, subjects_table, where)
        check_training_labels(labels, names, cohort.roles, fold_table)
        cohort.labels = torch.from_numpy(labels)
        cohort.label_names = names
        return cohort
    _add_segmentation_survival(cohort, rows, experiment, masks, tensors, subjects_table, fold_table)
    return cohort


def _add_segmentation_survival(
    cohort: Cohort,
    rows: pd.DataFrame,
    experiment: Mapping,
    masks: Sequence[str | Path] | None,
    tensors: Sequence[str | Path],
    subjects_table: str | Path,
    fold_table: str | Path,
) -> None:
    """Masks, survival times and events, and voxel sizes of a segmentation+survival cohort."""
    if masks is None or len(masks) != len(tensors):
        raise InputError(
            subjects_table,
            f"segmentation needs one mask per row, got {0 if masks is None else len(masks)} "
            f"for {len(tensors)} rows",
            "rerun the workflow so the CT/PET stage writes every GTV mask",
        )
    shape = tuple(cohort.images.shape[2:])
    arrays = []
    for path in masks:
        array = np.load(path, allow_pickle=False)
        if array.shape != shape:
            raise InputError(path, f"has shape {array.shape}, the images {shape}", "rerun its rule")
        arrays.append(array > 0)
    cohort.masks = torch.from_numpy(np.stack(arrays)[:, None].astype(np.float32))
    columns = experiment["survival"]
    table = rows[[columns["time"], columns["event"]]].apply(pd.to_numeric, errors="coerce")
    bad = table.isna().any(axis=1) | ~table[columns["event"]].isin([0, 1])
    if bad.any():
        raise InputError(
            subjects_table,
            f"survival columns {columns['time']}/{columns['event']} are missing or not numeric "
            f"(event 0/1) for {', '.join(rows.participant_id[bad].head(5))}",
            "fill them in participants.tsv",
        )
    cohort.times = torch.tensor(table[columns["time"]].to_numpy(np.float32))
    cohort.events = torch.tensor(table[columns["event"]].to_numpy(np.float32))
    cohort.labels = cohort.events
    if not cohort.events[cohort.indices("train")].any():
        raise InputError(
            fold_table,
            "the training part has no event, so a Cox model has nothing to learn from",
            "use fewer folds or stratify the splits by the event (survival_time_bins)",
        )
    cohort.spacing_mm = np.array([_spacing(path) for path in tensors])


def _spacing(tensor: str | Path) -> float:
    """The isotropic voxel size (mm) of a model-ready tensor, from its JSON sidecar."""
    sidecar = Path(tensor).with_suffix(".json")
    try:
        return float(json.loads(sidecar.read_text())["SpacingMM"])
    except (OSError, ValueError, KeyError) as error:
        raise InputError(
            sidecar, f"gives no voxel size SpacingMM ({error})", "rerun the CT/PET rule"
        ) from None


def _check_shapes(images: ImageStack, tensors: Sequence[str | Path], kind: str) -> None:
    """Every model-ready tensor is (2, X, Y, Z) with the same grid (from the .npy headers;
    values are checked as batches read them)."""
    shapes = images.file_shapes
    for path, shape in zip(tensors, shapes, strict=True):
        if len(shape) != 4 or shape[0] != 2:
            raise InputError(
                path, f"has shape {shape}, expected (2, X, Y, Z) {kind}", "rerun its rule"
            )
        if shape != shapes[0]:
            raise InputError(
                path,
                f"has shape {shape}, the cohort's first tensor {shapes[0]}",
                "give every subject the same model_ready.shape (rerun the preprocessing)",
            )
