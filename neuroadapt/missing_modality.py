"""Missing-modality robustness of the multimodal methods (papers 2 and 4).

Paper 4 claims its modality-anchored fusion holds up when modalities are missing; nobody
reports it on the same footing for every method. After training, each multimodal train job
predicts its test part again with one modality removed from a growing share of the test
subjects (:data:`FRACTIONS`; the same random order per modality for every share, so the
removed sets are nested), and the evaluate rule pools those predictions into
``results/<experiment>/missing_modality.tsv`` (AUC with a bootstrap interval per method,
modality and share; share 0 is the ordinary prediction).

A removed modality is what a missing one is in the data: its ``<name>_present`` flag is
False and its values are zeroed (a report's mask is all padding), so a model that ignored
the flag would still not see the data. The image is removed the same way (``image_present``)
from methods that can do without it; a method lists what it cannot do without in
``required_modalities`` (Brain-Adapter: the image). A subject whose other modalities are all
missing already keeps the one being removed: no method can predict from nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from neuroadapt.cohort import Cohort
from neuroadapt.evaluate import MISSING_MODALITY_FILE

__all__ = [
    "FRACTIONS",
    "MISSING_MODALITY_FILE",
    "missing_modality_predictions",
    "removable_modalities",
    "without",
]

#: Shares of the test subjects from which a modality is removed.
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
IMAGE = "image"


def _present_modalities(cohort: Cohort) -> list[str]:
    """The non-image modalities of ``cohort.extra`` (each has a ``<name>_present`` flag)."""
    return [key.removesuffix("_present") for key in cohort.extra if key.endswith("_present")]


def removable_modalities(method, cohort: Cohort) -> list[str]:
    """The image and every non-image modality, less those ``method`` requires."""
    required = set(getattr(method, "required_modalities", ()))
    return [m for m in (IMAGE, *_present_modalities(cohort)) if m not in required]


def _presence(cohort: Cohort, modality: str) -> np.ndarray:
    flag = cohort.extra.get(f"{modality}_present")
    return np.ones(len(cohort.labels), bool) if flag is None else flag.numpy().astype(bool)


def without(cohort: Cohort, modality: str, removed: np.ndarray) -> Cohort:
    """A copy of ``cohort`` in which ``modality`` is missing for the samples ``removed``
    (bool ``(N,)``): flag False, values zeroed, a mask all padding."""
    removed_rows = torch.from_numpy(np.asarray(removed, bool))
    keep = ~removed_rows
    extra = dict(cohort.extra)
    images = cohort.images
    if modality == IMAGE:
        images = cohort.images.zeroed(removed_rows.numpy())
        extra["image_present"] = torch.from_numpy(_presence(cohort, IMAGE)) & keep
    else:
        for key, value in cohort.extra.items():
            if key == f"{modality}_present":
                extra[key] = value.bool() & keep
            elif key == modality or key.startswith(f"{modality}_"):
                shape = (-1, *[1] * (value.dim() - 1))
                extra[key] = value * keep.view(shape).to(value.dtype)
    return dataclasses.replace(cohort, images=images, extra=extra)


def _subset(cohort: Cohort, index: np.ndarray) -> Cohort:
    rows = torch.from_numpy(np.asarray(index, dtype=np.int64))
    return dataclasses.replace(
        cohort,
        images=cohort.images.take(index),
        labels=cohort.labels[rows],
        roles=cohort.roles[index],
        ids=cohort.ids.iloc[index].reset_index(drop=True),
        extra={key: value[rows] for key, value in cohort.extra.items()},
    )


def missing_modality_predictions(
    task,
    method,
    model,
    cohort: Cohort,
    index: np.ndarray,
    device,
    batch_size: int,
    bf16: bool,
    seed: int,
    fractions=FRACTIONS,
) -> pd.DataFrame:
    """Predictions of the samples ``index`` with each removable modality missing for a share
    ``fractions`` of them: participant_id (session_id), modality, fraction, removed (whether
    this sample lost the modality), label, probability."""
    test = _subset(cohort, index)
    n = len(index)
    rng = np.random.default_rng(seed)
    modalities = removable_modalities(method, cohort)
    presence = {m: _presence(test, m) for m in (IMAGE, *_present_modalities(test))}
    frames = []
    for modality in modalities:
        rest = [p for m, p in presence.items() if m != modality]
        others = np.any(rest, axis=0) if rest else np.zeros(n, bool)
        order = rng.permutation(n)
        for fraction in fractions:
            removed = np.zeros(n, bool)
            removed[order[: round(fraction * n)]] = True
            removed &= others
            probabilities = task.probabilities(
                model, without(test, modality, removed), np.arange(n), device, batch_size, bf16
            )
            frame = test.ids.copy()
            frame["modality"] = modality
            frame["fraction"] = fraction
            frame["removed"] = removed
            frame["label"] = test.labels.numpy().astype(int)
            frame["probability"] = probabilities
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
