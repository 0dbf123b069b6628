"""CT pretraining of a demo-size backbone, so the demo's "CT-pretrained" models are that.

Real experiments load published CT foundation-model weights from a file (paper 1's
ResNet-50 x2 checkpoint, see :mod:`neuroadapt.models.backbones`). The demo has no such
file, so the ``pretrain`` rule makes one: a backbone of the same family is trained,
*supervised*, to tell CT scans with a tumour from scans without one on the
``demo_ct_pretrain`` cohort (lesion 0/1, balanced per site). Supervised rather than
self-supervised (SimCLR as in the real model) because the cohort is 16 scans: a contrastive
objective needs far more. Each scan becomes one body-centred box (HU windowed to [0, 1], the
CT/PET stage's resampling). The output is a plain state dict of the bare MONAI ResNet (the
format :func:`neuroadapt.models.backbones.load_pretrained` reads, one input channel, which
the loader inflates to the experiment's channels) and a JSON sidecar with its SHA-256.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.io import atomic_write_text
from neuroadapt.spec import spec_from_mapping

__all__ = ["PretrainSettings", "ct_boxes", "pretrain_backbone", "pretrain_settings"]


@dataclass(frozen=True)
class PretrainSettings:
    """``pretrain`` of the config: epochs, batch size, AdamW learning rate, seed, and the
    box each CT is resampled to (isotropic ``spacing_mm``, ``box_voxels`` per axis, HU
    window mapped to [0, 1])."""

    epochs: int = 30
    batch_size: int = 4
    lr: float = 1e-3
    seed: int = 0
    spacing_mm: float = 5.0
    box_voxels: tuple[int, int, int] = (32, 32, 32)
    hu_window: tuple[float, float] = (-200.0, 250.0)

    def check(self, where: str) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(where, "needs epochs >= 1 and batch_size >= 2", "e.g. 30 and 4")
        if len(self.box_voxels) != 3 or min(self.box_voxels) < 32:
            raise ConfigError(
                f"{where}.box_voxels",
                f"{list(self.box_voxels)} is too small for a ResNet (down-samples by 32)",
                "use at least [32, 32, 32]",
            )


def pretrain_settings(section: Mapping | None) -> PretrainSettings:
    return spec_from_mapping(PretrainSettings, section, "pretrain")


def ct_boxes(ct_paths: list[str], settings: PretrainSettings) -> np.ndarray:
    """``(N, 1, X, Y, Z)`` float32: each CT resampled onto a box centred on its body."""
    from neuroadapt.petct import resample
    from neuroadapt.petct.images import load_image

    crop = resample.CropSettings(
        spacing_mm=settings.spacing_mm,
        box_voxels=tuple(settings.box_voxels),
        centre="body",
        ct_hu_window=tuple(settings.hu_window),
    )
    boxes = []
    for path in ct_paths:
        ct = load_image(path)
        try:
            centre = resample.crop_centre(ct, None, crop)
        except InputError as error:
            raise InputError(path, error.problem, error.fix) from None
        grid = resample.box_grid(centre, crop.spacing_mm, crop.box_voxels)
        box = resample.resample(ct, grid, default=resample.CT_AIR_HU)
        boxes.append(resample.window(box, *crop.ct_hu_window)[None])
    return np.stack(boxes)


def pretrain_backbone(
    subjects_table: str,
    backbone_name: str,
    label_column: str,
    settings: PretrainSettings,
    weights_out: str,
    sidecar_out: str,
    threads: int = 1,
) -> dict:
    """Train backbone ``backbone_name`` (1 channel) to predict ``label_column`` (0/1) from
    the CTs of ``subjects_table``; write its weights and the sidecar. Returns the sidecar."""
    from neuroadapt.models import get_backbone
    from neuroadapt.models.backbones import sha256_of
    from neuroadapt.models.classifier import make_head
    from neuroadapt.subjects import read_subjects_table
    from neuroadapt.train import epoch_batches, save_atomically

    torch.set_num_threads(max(1, threads))
    rows = read_subjects_table(subjects_table)
    for column in ("ct", label_column):
        if column not in rows.columns or rows[column].isna().any():
            raise InputError(
                subjects_table,
                f"column '{column}' is missing or incomplete",
                f"pretraining needs a CT and a 0/1 '{label_column}' for every subject",
            )
    if (
        not rows[label_column].astype(str).isin(["0", "1"]).all()
        or rows[label_column].nunique() < 2
    ):
        raise InputError(
            subjects_table, f"'{label_column}' must hold both 0 and 1", "fix participants.tsv"
        )
    images = torch.from_numpy(ct_boxes(list(rows.ct), settings))
    labels = torch.from_numpy(rows[label_column].astype(int).to_numpy(np.float32))
    torch.manual_seed(settings.seed)
    with warnings.catch_warnings():  # pretraining starts from random weights on purpose
        warnings.filterwarnings("ignore", message=".*NO PRETRAINED WEIGHTS.*")
        backbone = get_backbone(backbone_name, in_channels=1)
    model = torch.nn.Sequential(backbone, make_head(backbone.feature_dim, 1, hidden=None))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    history = []
    model.train()
    for epoch in range(settings.epochs):
        losses, correct = [], 0
        for batch in epoch_batches(len(images), settings.batch_size, settings.seed * 7919 + epoch):
            logits = model(images[batch]).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()) * len(batch))
            correct += int(((logits > 0).float() == labels[batch]).sum())
        history.append(
            {
                "epoch": epoch + 1,
                "loss": sum(losses) / len(images),
                "accuracy": correct / len(images),
            }
        )
    save_atomically(backbone.net.state_dict(), weights_out)
    sidecar = {
        "backbone": backbone_name,
        "in_channels": 1,
        "objective": f"supervised: CT scan has {label_column} (binary cross-entropy)",
        "subjects_table": str(subjects_table),
        "n_scans": len(images),
        "settings": asdict(settings),
        "history": history,
        "sha256": sha256_of(weights_out),
    }
    text = json.dumps(sidecar, indent=2) + "\n"
    atomic_write_text(sidecar_out, text)
    return json.loads(text)  # what the file says (tuples become lists)
