"""CT pretraining of a demo-size backbone, so the demo's "CT-pretrained" models are that.

Real experiments load published CT foundation-model weights from a file (paper 1's
ResNet-50 x2 checkpoint, see :mod:`neuroadapt.models.backbones`). The demo has no such
file, so the ``pretrain`` rule makes one from the ``demo_ct_pretrain`` cohort (lesion 0/1,
balanced per site, a GTV mask per CT), *supervised* rather than self-supervised (SimCLR as
in paper 1's model) because the cohort is 16 scans: a contrastive objective needs far more.
The task depends on the backbone family:

* ResNets (paper 1) learn to tell CT scans with a tumour from scans without one. Each scan
  becomes one body-centred box (``pretrain`` config: HU windowed to [0, 1], the CT/PET
  stage's resampling).
* UNETRs (paper 5: PEMMA starts from a CT-pretrained UNETR) learn to segment the GTV
  (MONAI ``DiceCELoss``, sigmoid on one foreground channel). Each CT and its GTV mask are
  resampled onto the box the ``hnc_petct`` experiment trains on (``petct.crop``: spacing,
  box, centre, CT HU window), and the UNETR is built with ``img_size`` equal to that box,
  so its position embeddings (one per 16^3 patch) fit the adapted model's input.

The output is a plain state dict of the bare MONAI network (the format
:func:`neuroadapt.models.backbones.load_pretrained` reads, one input channel, which the
loader inflates to the experiment's channels) and a JSON sidecar with its SHA-256 and what
it was trained on.

Importing this module does not import torch (the workflow's input functions use
:func:`pretrain_gtv_inputs` and :func:`pretrain_crop_section` at DAG time).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.experiments import SEGMENTATION_BACKBONES
from neuroadapt.io import atomic_write_text
from neuroadapt.spec import spec_from_mapping

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import pandas as pd
    import torch

    from neuroadapt.models.swin_unetr import SwinUNETRBackbone
    from neuroadapt.models.unetr import UNETRBackbone
    from neuroadapt.petct.resample import CropSettings

__all__ = [
    "with_pretrained_weights",
    "SEGMENTATION_BACKBONES",
    "PretrainSettings",
    "crop_settings",
    "ct_boxes",
    "ct_gtv_boxes",
    "pretrain_backbone",
    "pretrain_crop_section",
    "pretrain_gtv_inputs",
    "pretrain_settings",
    "train_unetr_segmentation",
    "segmentation_network_for_box",
]

# SEGMENTATION_BACKBONES (UNETR, Swin UNETR) are pretrained for GTV segmentation, the rest for
# lesion classification: a name list (neuroadapt.experiments) so that the workflow picks the
# rule's inputs without importing torch.


@dataclass(frozen=True)
class PretrainSettings:
    """``pretrain`` of the config: epochs, batch size, AdamW learning rate, seed, and the
    box each CT is resampled to (isotropic ``spacing_mm``, ``box_voxels`` per axis, HU
    window mapped to [0, 1]). UNETRs train for ``segmentation_epochs`` at
    ``segmentation_lr`` (batch size and seed shared) on ``petct.crop``'s box (see
    :func:`pretrain_backbone`): on the 16 demo scans, 30 epochs at 1e-3 leave the GTV
    unfound (training Dice 0: the background class wins first), 100 at 3e-3 reach ~0.9 in
    about a minute on 2 cores (32^3 box)."""

    epochs: int = 30
    batch_size: int = 4
    lr: float = 1e-3
    seed: int = 0
    spacing_mm: float = 5.0
    box_voxels: tuple[int, int, int] = (32, 32, 32)
    hu_window: tuple[float, float] = (-200.0, 250.0)
    segmentation_epochs: int = 100
    segmentation_lr: float = 3e-3

    def check(self, where: str) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.segmentation_epochs < 1:
            raise ConfigError(
                where,
                "needs epochs >= 1, segmentation_epochs >= 1 and batch_size >= 2",
                "e.g. 30, 100 and 4",
            )
        if len(self.box_voxels) != 3 or min(self.box_voxels) < 32:
            raise ConfigError(
                f"{where}.box_voxels",
                f"{list(self.box_voxels)} is too small for a ResNet (down-samples by 32)",
                "use at least [32, 32, 32]",
            )


def pretrain_settings(section: Mapping | None) -> PretrainSettings:
    return spec_from_mapping(PretrainSettings, section, "pretrain")


def crop_settings(section: Mapping | None) -> CropSettings:
    """``petct.crop`` of the config as the CT/PET stage reads it."""
    from neuroadapt.petct import resample

    return spec_from_mapping(resample.CropSettings, section, "petct.crop")


# --- what the workflow hands the rule -----------------------------------------------------


def pretrain_gtv_inputs(table: pd.DataFrame, backbone_name: str) -> list[str]:
    """GTV mask files the ``pretrain`` job of ``backbone_name`` reads: the ``gtv`` column of
    the subjects ``table`` for a UNETR (empty cells: scans without a mask), none for others
    (so a ResNet's job does not rerun when a mask changes)."""
    if backbone_name not in SEGMENTATION_BACKBONES or "gtv" not in table.columns:
        return []
    return [path for path in table["gtv"] if isinstance(path, str) and path]


def pretrain_crop_section(config: Mapping, backbone_name: str) -> dict | None:
    """``petct.crop`` of ``config`` for a UNETR's ``pretrain`` job, None for other backbones
    (whose job must not rerun when the CT/PET box changes)."""
    if backbone_name not in SEGMENTATION_BACKBONES:
        return None
    return dict((config.get("petct") or {}).get("crop") or {})


# --- boxes --------------------------------------------------------------------------------


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


def ct_gtv_boxes(
    ct_paths: Sequence[str], gtv_paths: Sequence[str | None], crop: CropSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Each CT and its GTV mask on the CT/PET stage's box: ``(N, 1, X, Y, Z)`` float32 CT
    windowed to [0, 1] (``crop.ct_hu_window``, HU) and ``(N, 1, X, Y, Z)`` float32 0/1 GTV,
    ``crop.box_voxels`` voxels of ``crop.spacing_mm`` mm, RAS axes.

    The box is centred as in :func:`neuroadapt.petct.resample.crop_centre`: on the GTV's
    centre of mass (``centre: gtv``) or the body's (``centre: body``). A scan without a
    lesion (empty mask, or no mask: ``None``) has no GTV to centre on, so its box is
    body-centred, as the CT/PET stage's ``centre: body`` would place it. Linear
    interpolation for the CT (air outside the scan), nearest neighbour for the mask.
    """
    from neuroadapt.petct import resample
    from neuroadapt.petct.images import load_image

    body = replace(crop, centre="body")
    images, masks = [], []
    for ct_path, gtv_path in zip(ct_paths, gtv_paths, strict=True):
        ct = load_image(ct_path)
        gtv = load_image(gtv_path) if gtv_path else None
        has_lesion = gtv is not None and resample.centre_of_mass_ras(gtv) is not None
        try:
            centre = resample.crop_centre(ct, gtv, crop if has_lesion else body, gtv_path)
        except InputError as error:
            raise InputError(ct_path, error.problem, error.fix) from None
        grid = resample.box_grid(centre, crop.spacing_mm, crop.box_voxels)
        ct_box = resample.resample(ct, grid, default=resample.CT_AIR_HU)
        images.append(resample.window(ct_box, *crop.ct_hu_window)[None])
        if gtv is None:
            masks.append(np.zeros_like(images[-1]))
        else:
            gtv_box = resample.resample(gtv, grid, nearest=True)
            array = _xyz(gtv_box)
            masks.append((array > 0).astype(np.float32)[None])
    return np.stack(images), np.stack(masks)


def _xyz(image) -> np.ndarray:
    """Voxels of a SimpleITK image in (X, Y, Z) order (SimpleITK's arrays are (Z, Y, X)),
    the order of :func:`neuroadapt.petct.resample.window`."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


# --- UNETR: GTV segmentation ---------------------------------------------------------------


def segmentation_network_for_box(
    backbone_name: str,
    box_voxels: Sequence[int],
    in_channels: int = 1,
) -> UNETRBackbone | SwinUNETRBackbone:
    """Segmentation network ``backbone_name`` (UNETR or Swin UNETR, random weights) for
    volumes of ``box_voxels``: the demo sizes are built for the box, a paper size must
    already take it. ConfigError naming ``petct.crop.box_voxels`` otherwise."""
    from neuroadapt.models.backbones import BACKBONES, takes_image_size

    box = tuple(int(n) for n in box_voxels)
    if backbone_name not in SEGMENTATION_BACKBONES:
        raise ConfigError(
            "backbone",
            f"{backbone_name!r} is not a UNETR or Swin UNETR",
            f"segmentation pretraining needs one of {', '.join(sorted(SEGMENTATION_BACKBONES))}",
        )
    factory = BACKBONES[backbone_name]
    if not takes_image_size(backbone_name):
        network = factory(in_channels=in_channels)
        if tuple(network.img_size) != box:
            raise ConfigError(
                "petct.crop.box_voxels",
                f"{list(box)} is not the {list(network.img_size)} input of {backbone_name}",
                f"set it to {list(network.img_size)}",
            )
        return network
    try:
        return factory(in_channels=in_channels, img_size=box)
    except ValueError as error:
        raise ConfigError(
            "petct.crop.box_voxels", str(error), "use a box the network can take"
        ) from None


def _pooled_dice(logits: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    """Intersection and size sum (voxels) of ``sigmoid(logits) > 0.5`` and ``masks``, so
    that Dice pools over scans: scans without a lesion add their false positives."""
    predicted = logits.detach() > 0
    truth = masks > 0.5
    return float((predicted & truth).sum()), float(predicted.sum() + truth.sum())


def _dice(intersection: float, sizes: float) -> float:
    return 2.0 * intersection / sizes if sizes > 0 else 1.0  # nothing to find, none found


def _training_set_dice(
    model: UNETRBackbone, images: torch.Tensor, masks: torch.Tensor, batch_size: int
) -> float:
    """Pooled Dice of ``model`` on the whole set, without training (eval mode, no grad)."""
    import torch

    was_training = model.training
    model.eval()
    intersection = sizes = 0.0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            i, s = _pooled_dice(
                model(images[start : start + batch_size]), masks[start : start + batch_size]
            )
            intersection, sizes = intersection + i, sizes + s
    model.train(was_training)
    return _dice(intersection, sizes)


def train_unetr_segmentation(
    model: UNETRBackbone,
    images: torch.Tensor,
    masks: torch.Tensor,
    settings: PretrainSettings,
) -> dict:
    """Train ``model`` in place to segment ``masks`` ``(N, 1, *img_size)`` (0/1) from
    ``images`` ``(N, 1, *img_size)``: MONAI ``DiceCELoss`` (sigmoid, one foreground
    channel: the Dice part is the overlap of the soft prediction with the mask, the CE part
    binary cross-entropy per voxel), AdamW at ``settings.lr``, ``settings.epochs`` epochs of
    seeded shuffled batches. Returns ``initial_dice`` and ``final_dice`` (pooled training
    Dice, threshold 0.5, before and after) and the per-epoch ``history`` (mean loss, Dice of
    the batches' predictions as they were trained).

    ValueError when the volumes are not the model's ``img_size``: UNETR's position
    embeddings fix its input size, so the box must be built for the model (or the model
    for the box, :func:`segmentation_network_for_box`).
    """
    import torch
    from monai.losses import DiceCELoss

    from neuroadapt.train import epoch_batches

    size = tuple(model.img_size)
    if tuple(images.shape[2:]) != size or images.shape != masks.shape:
        raise ValueError(
            f"CT boxes {tuple(images.shape[2:])} and masks {tuple(masks.shape[2:])} do not "
            f"match the UNETR's img_size {size}: its position embeddings fix the input size; "
            f"resample the CTs onto a {size} box (petct.crop.box_voxels) or build the UNETR "
            "with img_size equal to the box (neuroadapt.pretrain.segmentation_network_for_box)"
        )
    loss_function = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    initial = _training_set_dice(model, images, masks, settings.batch_size)
    history = []
    model.train()
    for epoch in range(settings.epochs):
        total, intersection, sizes = 0.0, 0.0, 0.0
        for batch in epoch_batches(len(images), settings.batch_size, settings.seed * 7919 + epoch):
            logits = model(images[batch])
            loss = loss_function(logits, masks[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            i, s = _pooled_dice(logits, masks[batch])
            intersection, sizes = intersection + i, sizes + s
        history.append(
            {"epoch": epoch + 1, "loss": total / len(images), "dice": _dice(intersection, sizes)}
        )
    final = _training_set_dice(model, images, masks, settings.batch_size)
    return {"initial_dice": initial, "final_dice": final, "history": history}


def _pretrain_unetr(
    rows: pd.DataFrame,
    subjects_table: str,
    backbone_name: str,
    gtv_column: str,
    settings: PretrainSettings,
    crop: CropSettings | None,
) -> tuple[UNETRBackbone, dict]:
    """The UNETR of :func:`pretrain_backbone`, trained, and its sidecar entries."""
    import torch

    if crop is None:
        raise ConfigError(
            "petct.crop",
            f"UNETR {backbone_name!r} is pretrained on the CT/PET stage's box, but no crop "
            "settings were given",
            "pass petct.crop (the pretrain rule's params.crop)",
        )
    if gtv_column not in rows.columns:
        raise InputError(
            subjects_table,
            f"has no '{gtv_column}' column",
            "a UNETR is pretrained to segment the GTV: ingest a dataset with a GTV mask per "
            "CT (derivatives/gtv/...), or pretrain a ResNet",
        )
    gtvs = [path if isinstance(path, str) and path else None for path in rows[gtv_column]]
    # Build (and check) the network before the CTs are read: a box UNETR cannot take fails
    # at once. Seeded here so the initial weights depend on the seed only.
    torch.manual_seed(settings.seed)
    model = segmentation_network_for_box(backbone_name, crop.box_voxels)
    images, masks = (torch.from_numpy(a) for a in ct_gtv_boxes(list(rows.ct), gtvs, crop))
    with_lesion = int((masks.flatten(1).amax(dim=1) > 0).sum())
    if with_lesion == 0:
        raise InputError(
            subjects_table,
            "no GTV mask has a voxel inside its box: there is nothing to segment",
            "check the gtv masks (they must lie on their CTs) and petct.crop",
        )
    settings = replace(settings, epochs=settings.segmentation_epochs, lr=settings.segmentation_lr)
    result = train_unetr_segmentation(model, images, masks, settings)
    sidecar = {
        "backbone": backbone_name,
        "in_channels": 1,
        "out_channels": 1,
        "img_size": list(model.img_size),
        "task": "segmentation",
        "objective": "supervised: GTV segmentation (MONAI DiceCELoss, sigmoid, one "
        "foreground channel)",
        "subjects_table": str(subjects_table),
        "gtv_column": gtv_column,
        "n_scans": len(images),
        "n_scans_with_gtv": with_lesion,
        "settings": {k: asdict(settings)[k] for k in ("epochs", "batch_size", "lr", "seed")},
        "crop": asdict(crop),
        "epochs": settings.epochs,
        "initial_training_dice": result["initial_dice"],
        "final_training_dice": result["final_dice"],
        "history": result["history"],
    }
    return model, sidecar


# --- the rule ----------------------------------------------------------------------------


def with_pretrained_weights(backbone: Mapping, inputs) -> dict:
    """The backbone spec a job builds: with the pretrain rule's weights file and the SHA-256
    its sidecar holds when the job's Snakemake ``inputs`` name them (``weights``,
    ``weights_sidecar``), else ``backbone`` as configured."""
    spec = dict(backbone)
    if "weights_sidecar" in inputs.keys():
        spec["weights"] = inputs.weights
        spec["sha256"] = json.loads(Path(inputs.weights_sidecar).read_text())["sha256"]
    return spec


def pretrain_backbone(
    subjects_table: str,
    backbone_name: str,
    label_column: str,
    settings: PretrainSettings,
    weights_out: str,
    sidecar_out: str,
    threads: int = 1,
    crop: CropSettings | None = None,
    gtv_column: str = "gtv",
) -> dict:
    """Pretrain backbone ``backbone_name`` (1 input channel) on the CTs of
    ``subjects_table``; write its weights (state dict of the bare MONAI network) and the
    sidecar. Returns the sidecar.

    A UNETR (:data:`SEGMENTATION_BACKBONES`) learns to segment the ``gtv_column`` masks on
    ``crop``'s boxes (``img_size`` = ``crop.box_voxels``; ``crop`` is required); any other
    backbone learns to predict ``label_column`` (0/1) on ``settings``' body-centred boxes.
    """
    import torch

    from neuroadapt.io import sha256_of
    from neuroadapt.subjects import read_subjects_table
    from neuroadapt.train import save_atomically

    torch.set_num_threads(max(1, threads))
    rows = read_subjects_table(subjects_table)
    if "ct" not in rows.columns or rows["ct"].isna().any():
        raise InputError(
            subjects_table,
            "column 'ct' is missing or incomplete",
            "pretraining needs a CT for every subject",
        )
    if backbone_name in SEGMENTATION_BACKBONES:
        model, sidecar = _pretrain_unetr(
            rows, subjects_table, backbone_name, gtv_column, settings, crop
        )
    else:
        model, sidecar = _pretrain_classifier(
            rows, subjects_table, backbone_name, label_column, settings
        )
    save_atomically(model.net.state_dict(), weights_out)
    sidecar["sha256"] = sha256_of(weights_out)
    text = json.dumps(sidecar, indent=2) + "\n"
    atomic_write_text(sidecar_out, text)
    return json.loads(text)  # what the file says (tuples become lists)


def _pretrain_classifier(
    rows: pd.DataFrame,
    subjects_table: str,
    backbone_name: str,
    label_column: str,
    settings: PretrainSettings,
):
    """The backbone of :func:`pretrain_backbone` trained to predict ``label_column`` (binary
    cross-entropy, one logit from a linear head), and its sidecar entries."""
    import torch

    from neuroadapt.models import get_backbone
    from neuroadapt.models.classifier import make_head
    from neuroadapt.train import epoch_batches

    if label_column not in rows.columns or rows[label_column].isna().any():
        raise InputError(
            subjects_table,
            f"column '{label_column}' is missing or incomplete",
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
    sidecar = {
        "backbone": backbone_name,
        "in_channels": 1,
        "task": "classification",
        "objective": f"supervised: CT scan has {label_column} (binary cross-entropy)",
        "subjects_table": str(subjects_table),
        "n_scans": len(images),
        "settings": asdict(settings),
        "history": history,
    }
    return backbone, sidecar
