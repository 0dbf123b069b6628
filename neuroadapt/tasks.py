"""What training does per task: batches, validation metrics, model selection, predictions.

:func:`neuroadapt.train.fit` is the same loop for every task; a task object supplies what
differs:

* ``binary`` (papers 1 and 3; :class:`ClassificationTask`): the model maps the image tensor
  to one logit; validation gives BCE loss, accuracy and AUC; two models are kept, best
  validation accuracy and best validation AUC (paper 1); predictions are positive-class
  probabilities.
* ``multilabel`` (paper 3; :class:`MultilabelTask`): one logit per label (finding);
  validation gives the mean BCE over labels, the mean per-label accuracy and the macro AUC;
  the kept models are best validation mean per-label accuracy (``best_acc``) and best
  validation macro AUC (``best_auc``); predictions are per-label probabilities.
* ``segmentation+survival`` (paper 5; :class:`SegmentationSurvivalTask`): the model maps
  ``{"ct", "pet"}`` to a GTV segmentation and a risk; validation gives the method's loss,
  the mean Dice of the thresholded segmentations (MONAI) and Harrell's C-index of the risks
  (scikit-survival); the kept models are best validation Dice and best validation C-index;
  predictions are per test subject: risk, Dice, HD95 (mm) and the predicted mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from neuroadapt.cohort import Cohort
from neuroadapt.metrics import harrell_c, macro_auc, safe_auc
from neuroadapt.train_settings import AugmentSettings

__all__ = [
    "Augmenter",
    "ClassificationTask",
    "MultilabelTask",
    "MultimodalClassificationTask",
    "SegmentationSurvivalTask",
    "autocast",
    "predict_probabilities",
    "task_for",
]


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; a no-op context on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


class Augmenter:
    """MONAI array transforms for one training sample ``(C, X, Y, Z)``, re-seeded per epoch.

    With a mask, the flip is drawn once for image and mask together (stacked as one more
    channel), and the intensity transforms touch the image only.
    """

    def __init__(self, settings: AugmentSettings) -> None:
        from monai.transforms import Compose, RandFlip, RandGaussianNoise, RandScaleIntensity
        from monai.utils import convert_to_tensor

        self._to_tensor = convert_to_tensor
        self.transform = Compose(
            [
                RandFlip(prob=settings.flip_prob, spatial_axis=0),
                RandGaussianNoise(prob=settings.noise_prob, std=settings.noise_std),
                RandScaleIntensity(factors=settings.scale, prob=settings.scale_prob),
            ]
        )

    def seed(self, seed: int) -> None:
        self.transform.set_random_state(seed=seed % (2**32))

    def __call__(self, sample: torch.Tensor) -> torch.Tensor:
        return self._to_tensor(self.transform(sample), track_meta=False, dtype=torch.float32)

    def with_mask(self, sample: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``sample`` ``(C, X, Y, Z)`` and its ``mask`` ``(1, X, Y, Z)``, flipped alike."""
        flip, *intensity = self.transform.transforms
        both = self._to_tensor(flip(torch.cat([sample, mask])), track_meta=False)
        image = both[:-1]
        for transform in intensity:
            image = transform(image)
        return self._to_tensor(image, track_meta=False, dtype=torch.float32), both[-1:].float()


def _part(batch: torch.Tensor, index: np.ndarray, part: np.ndarray | None):
    """The rows ``part`` of a batch and of its index (all of them when ``part`` is None)."""
    return (batch, index) if part is None else (batch[part], index[part])


def predict_probabilities(
    model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int, bf16: bool
) -> np.ndarray:
    """Positive-class probabilities ``(N,)`` of ``images`` ``(N, C, X, Y, Z)``, eval mode; a
    model with one logit per label (multilabel) gives per-label probabilities ``(N, L)``."""
    model.eval()
    scores = []
    with torch.no_grad(), autocast(device, bf16):
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size].to(device))
            scores.append(torch.sigmoid(logits.float().squeeze(-1)).cpu())
    return torch.cat(scores).numpy().astype(np.float64) if scores else np.zeros(0)


class ClassificationTask:
    """Binary classification of the image tensor (papers 1 and 3)."""

    selections: ClassVar[dict[str, str]] = {"best_acc": "val_accuracy", "best_auc": "val_auc"}

    def model_inputs(self, cohort: Cohort, index: np.ndarray, device: torch.device):
        return cohort.images[index].to(device)

    def train_loss(
        self, method, model, cohort, index, augmenter, device, bf16, part=None, images=None
    ) -> torch.Tensor:
        """The loss of the batch ``index``; with ``part`` (positions in the batch: this
        process's share under DDP) of that part only, the whole batch's augmentations drawn
        (so the random stream does not depend on the number of processes). ``images``: the
        batch's images when already read (``cohort.images[index]``)."""
        images = cohort.images[index] if images is None else images
        x = torch.stack([augmenter(sample) for sample in images])
        x, index = _part(x, index, part)
        x, y = x.to(device), cohort.labels[index].to(device)
        with autocast(device, bf16):
            logits = model(x)
        return method.loss(logits.float(), y)

    def probabilities(self, model, cohort, index, device, batch_size, bf16) -> np.ndarray:
        return predict_probabilities(model, cohort.images.take(index), device, batch_size, bf16)

    def validate(self, method, model, cohort, index, device, batch_size, bf16) -> dict:
        y = cohort.labels[index].numpy()
        probabilities = self.probabilities(model, cohort, index, device, batch_size, bf16)
        p = np.clip(probabilities, 1e-7, 1 - 1e-7)
        return {
            "val_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
            "val_accuracy": float(np.mean((probabilities >= 0.5) == y)),
            "val_auc": safe_auc(y, probabilities),
        }

    def no_selection_fix(self) -> tuple[str, str]:
        return (
            "the validation part never had both classes, so no model can be selected by AUC",
            "raise splits.validation_fraction so validation holds both classes",
        )

    #: The kept model the interpret rule explains (:mod:`neuroadapt.interpret`).
    explained_selection = "best_auc"

    def explained_targets(self, cohort: Cohort, target: str) -> list[str]:
        """The names of the outputs attributions explain, in output order."""
        return [target]

    def attribution_forward(self, model, cohort: Cohort, index: int, output: int):
        """Images ``(B, C, X, Y, Z)`` -> the logit ``output`` ``(B,)``, for sample ``index``."""
        return lambda images: model(images).reshape(len(images), -1)[:, output].float()

    def predict(self, method, model, cohort, index, device, batch_size, bf16):
        """Per test sample: the label and the positive-class probability; no artefacts."""
        probabilities = self.probabilities(model, cohort, index, device, batch_size, bf16)
        columns = {"label": cohort.labels[index].numpy().astype(int), "probability": probabilities}
        return columns, {}


class MultimodalClassificationTask(ClassificationTask):
    """Binary classification from the image tensor and non-image inputs (papers 2 and 4):
    the model reads ``{"image", "report_text", "clinical", ...}`` and returns ``"logits"``."""

    def model_inputs(self, cohort: Cohort, index: np.ndarray, device: torch.device) -> dict:
        inputs = {"image": cohort.images[index].to(device)}
        return inputs | {key: value[index].to(device) for key, value in cohort.extra.items()}

    def train_loss(
        self, method, model, cohort, index, augmenter, device, bf16, part=None, images=None
    ) -> torch.Tensor:
        images = cohort.images[index] if images is None else images
        image = torch.stack([augmenter(x) for x in images])
        image, index = _part(image, index, part)
        inputs = {key: value[index].to(device) for key, value in cohort.extra.items()}
        inputs["image"] = image.to(device)
        with autocast(device, bf16):
            outputs = model(inputs)
        return method.loss(_float(outputs), {"label": cohort.labels[index].to(device)})

    def attribution_forward(self, model, cohort: Cohort, index: int, output: int):
        """The image ``(B, C, X, Y, Z)`` -> the logit ``(B,)``, sample ``index``'s non-image
        inputs held fixed (repeated for the batch of perturbed images)."""
        device = next(model.parameters()).device
        extra = {key: value[[index]].to(device) for key, value in cohort.extra.items()}

        def forward(images):
            n = len(images)
            fixed = {key: value.expand(n, *value.shape[1:]) for key, value in extra.items()}
            return model({"image": images, **fixed})["logits"].reshape(n, -1)[:, output].float()

        return forward

    def probabilities(self, model, cohort, index, device, batch_size, bf16) -> np.ndarray:
        model.eval()
        scores = []
        with torch.no_grad(), autocast(device, bf16):
            for start in range(0, len(index), batch_size):
                inputs = self.model_inputs(cohort, index[start : start + batch_size], device)
                logits = model(inputs)["logits"].float().squeeze(-1)
                scores.append(torch.sigmoid(logits).cpu())
        return torch.cat(scores).numpy().astype(np.float64) if scores else np.zeros(0)


class MultilabelTask(ClassificationTask):
    """Multi-label classification of the image tensor (paper 3: several findings per scan).

    The model gives one logit per label; the cohort's labels are ``(N, L)`` 0/1. Validation:
    ``val_loss`` the BCE averaged over samples and labels (the training loss), ``val_accuracy``
    the mean per-label accuracy at probability 0.5 (1 - Hamming loss; chosen over subset
    accuracy, which on a few validation subjects is nearly always 0 and cannot rank epochs),
    ``val_subset_accuracy`` (all labels right), and ``val_auc`` the macro ROC AUC over the
    labels that hold both classes in the validation part (scikit-learn)."""

    def validate(self, method, model, cohort, index, device, batch_size, bf16) -> dict:
        y = cohort.labels[index].numpy()
        probabilities = self.probabilities(model, cohort, index, device, batch_size, bf16)
        p = np.clip(probabilities, 1e-7, 1 - 1e-7)
        predicted = probabilities >= 0.5
        return {
            "val_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
            "val_accuracy": float(np.mean(predicted == y)),
            "val_subset_accuracy": float(np.mean((predicted == y).all(axis=1))),
            "val_auc": macro_auc(y, probabilities, partial=True)[0],
        }

    def explained_targets(self, cohort: Cohort, target) -> list[str]:
        return list(cohort.label_names)

    def no_selection_fix(self) -> tuple[str, str]:
        return (
            "no label had both classes in the validation part, so no model can be selected "
            "by macro AUC",
            "raise splits.validation_fraction so validation holds subjects with and without "
            "each finding",
        )

    def predict(self, method, model, cohort, index, device, batch_size, bf16):
        """Per test sample and label ``<name>``: the true label ``label_<name>`` (0/1) and the
        probability ``prob_<name>``; no artefacts."""
        probabilities = self.probabilities(model, cohort, index, device, batch_size, bf16)
        labels = cohort.labels[index].numpy().astype(int)
        columns = {}
        for k, name in enumerate(cohort.label_names):
            columns[f"label_{name}"] = labels[:, k]
        for k, name in enumerate(cohort.label_names):
            columns[f"prob_{name}"] = probabilities[:, k]
        return columns, {}


class SegmentationSurvivalTask:
    """GTV segmentation and survival risk from CT and PET (paper 5)."""

    selections: ClassVar[dict[str, str]] = {"best_dice": "val_dice", "best_cindex": "val_cindex"}

    #: The interpret rule explains the risk, so the model of best C-index.
    explained_selection = "best_cindex"

    def model_inputs(self, cohort: Cohort, index: np.ndarray, device: torch.device) -> dict:
        images = cohort.images[index].to(device)
        return {name: images[:, [c]] for c, name in enumerate(cohort.channels)}

    def explained_targets(self, cohort: Cohort, target) -> list[str]:
        return ["risk"]

    def attribution_forward(self, model, cohort: Cohort, index: int, output: int):
        """The CT/PET image ``(B, 2, X, Y, Z)`` -> the risk ``(B,)``."""

        def forward(images):
            inputs = {name: images[:, [c]] for c, name in enumerate(cohort.channels)}
            return model(inputs)["risk"].reshape(len(images)).float()

        return forward

    def targets(self, cohort: Cohort, index: np.ndarray, device: torch.device) -> dict:
        return {
            "mask": cohort.masks[index].to(device),
            "time": cohort.times[index].to(device),
            "event": cohort.events[index].to(device),
        }

    def train_loss(
        self, method, model, cohort, index, augmenter, device, bf16, part=None, images=None
    ) -> torch.Tensor:
        """As for classification; under DDP each process's Cox loss takes the risk sets of
        its share of the batch (as a smaller batch would)."""
        images = cohort.images[index] if images is None else images
        pairs = [
            augmenter.with_mask(x, m) for x, m in zip(images, cohort.masks[index], strict=True)
        ]
        images = torch.stack([image for image, _ in pairs])
        masks = torch.stack([mask for _, mask in pairs])
        if part is not None:
            images, masks, index = images[part], masks[part], index[part]
        images = images.to(device)
        inputs = {name: images[:, [c]] for c, name in enumerate(cohort.channels)}
        targets = self.targets(cohort, index, device)
        targets["mask"] = masks.to(device)
        with autocast(device, bf16):
            outputs = model(inputs)
        return method.loss(_float(outputs), targets)

    def outputs(self, model, cohort, index, device, batch_size, bf16) -> dict[str, torch.Tensor]:
        """The model's outputs for ``index`` in eval mode, on the CPU, in float32."""
        model.eval()
        parts: list[Mapping[str, torch.Tensor]] = []
        with torch.no_grad(), autocast(device, bf16):
            for start in range(0, len(index), batch_size):
                chunk = index[start : start + batch_size]
                parts.append(
                    {
                        k: v.cpu()
                        for k, v in _float(model(self.model_inputs(cohort, chunk, device))).items()
                    }
                )
        return {key: torch.cat([p[key] for p in parts]) for key in ("segmentation", "risk")}

    def validate(self, method, model, cohort, index, device, batch_size, bf16) -> dict:
        outputs = self.outputs(model, cohort, index, device, batch_size, bf16)
        with torch.no_grad():  # the whole validation part at once: Cox needs every risk set
            loss = float(method.loss(outputs, self.targets(cohort, index, torch.device("cpu"))))
        predicted = (torch.sigmoid(outputs["segmentation"]) >= 0.5).float()
        return {
            "val_loss": loss,
            "val_dice": float(np.nanmean(dice_scores(predicted, cohort.masks[index]))),
            "val_cindex": harrell_c(
                cohort.events[index].numpy(), cohort.times[index].numpy(), outputs["risk"].numpy()
            ),
        }

    def no_selection_fix(self) -> tuple[str, str]:
        return (
            "no pair of validation subjects could be ordered by survival (no event), so no "
            "model can be selected by C-index",
            "raise splits.validation_fraction or stratify the splits by event",
        )

    def predict(self, method, model, cohort, index, device, batch_size, bf16):
        """Per test sample: event, time, risk, Dice and HD95 (mm); artefact: the predicted
        masks (uint8 ``(X, Y, Z)`` by row prefix) for the report's examples."""
        from monai.metrics import compute_hausdorff_distance

        outputs = self.outputs(model, cohort, index, device, batch_size, bf16)
        predicted = (torch.sigmoid(outputs["segmentation"]) >= 0.5).float()
        truth = cohort.masks[index]
        hd95 = []
        for i in range(len(index)):
            if predicted[i].any() and truth[i].any():
                distance = compute_hausdorff_distance(
                    predicted[i : i + 1],
                    truth[i : i + 1],
                    percentile=95,
                    spacing=float(cohort.spacing_mm[index[i]]),
                )
                hd95.append(float(distance))
            else:  # undefined with an empty mask on either side
                hd95.append(float("nan"))
        columns = {
            "event": cohort.events[index].numpy().astype(int),
            "time": cohort.times[index].numpy().astype(float),
            "risk": outputs["risk"].numpy().astype(float),
            "dice": dice_scores(predicted, truth),
            "hd95_mm": np.asarray(hd95),
        }
        masks = {
            _prefix(cohort.ids.iloc[i]): predicted[k, 0].numpy().astype(np.uint8)
            for k, i in enumerate(index)
        }
        return columns, {"masks": masks}


def dice_scores(predicted: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """Dice per sample of binary masks ``(N, 1, X, Y, Z)`` (MONAI); 1 when both are empty."""
    from monai.metrics import compute_dice

    return compute_dice(predicted, truth, include_background=True, ignore_empty=False)[:, 0].numpy()


def _float(outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating outputs in float32 (bf16 under autocast); masks and flags as they are."""
    return {k: v.float() if v.is_floating_point() else v for k, v in outputs.items()}


def _prefix(row: pd.Series) -> str:
    from neuroadapt.subjects import row_prefix

    return row_prefix(row.participant_id, row.session_id)


TASKS = {
    "binary": ClassificationTask,
    "multilabel": MultilabelTask,
    "segmentation+survival": SegmentationSurvivalTask,
}


def task_for(name: str, inputs=()):
    """The task object of an experiment's ``task`` (and ``inputs``: a binary experiment with
    non-image inputs is multimodal classification)."""
    from neuroadapt.experiments import NON_IMAGE_INPUTS

    if name == "binary" and set(inputs) & set(NON_IMAGE_INPUTS):
        return MultimodalClassificationTask()
    return TASKS[name]()
