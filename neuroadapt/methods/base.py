"""What every adaptation method exposes: model, optimiser parameter groups, loss, counts."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from neuroadapt.models.classifier import Classifier, make_head

__all__ = [
    "frozen_pass",
    "AdaptationMethod",
    "Method",
    "MultimodalMethod",
    "ParameterReport",
    "Task",
    "classification_loss",
    "count_parameters",
    "unfreeze_norms",
]

Task = Literal["binary", "multiclass", "multilabel"]


@dataclass(frozen=True)
class ParameterReport:
    """Parameter counts of a model: ``percent`` = 100 * trainable / total."""

    total: int
    trainable: int
    percent: float

    def as_dict(self) -> dict[str, float]:
        return {"total": self.total, "trainable": self.trainable, "percent": self.percent}


def frozen_pass(*inputs: torch.Tensor):
    """The context for a frozen encoder's pass: ``torch.no_grad()`` (no activations kept for
    backward), except when an input asks for its gradient, as attribution maps do
    (:mod:`neuroadapt.attribution`): then the gradient flows through the frozen weights to it."""
    if any(x.requires_grad for x in inputs):
        return contextlib.nullcontext()
    return torch.no_grad()


def count_parameters(model: nn.Module) -> ParameterReport:
    """Unique parameters of ``model`` (shared tensors counted once)."""
    params = list(model.parameters())  # nn.Module.parameters() already de-duplicates
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return ParameterReport(total, trainable, 100.0 * trainable / total if total else 0.0)


#: The normalisation layers whose affine weights ``unfreeze_norms`` trains.
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm3d)


def unfreeze_norms(module: nn.Module) -> list[nn.Parameter]:
    """Make the affine weights (scale and shift per channel) of every normalisation layer of
    ``module`` trainable and return them.

    A frozen CT backbone needs per-channel gains to fit FA/MD maps: a rank-r update of a
    conv kernel cannot rescale all its output channels (``diag(g) W`` is a full-rank change),
    whereas a trained BatchNorm (like DoRA's magnitude vector) can. A BatchNorm with trained
    weights also normalises with batch statistics in training mode (``Classifier.train``
    keeps only fully frozen ones in eval mode), as under full fine-tuning."""
    params = []
    for m in module.modules():
        if isinstance(m, NORMS):
            for p in m.parameters(recurse=False):
                p.requires_grad_(True)
                params.append(p)
    return params


class Method(ABC):
    """What every method exposes, whatever its inputs and outputs.

    ``self.model`` is the ``nn.Module`` that trains; ``param_groups`` gives the optimiser its
    parameters with one learning rate per group; ``loss(output, target)`` is the training
    loss of one batch. Image classifiers on one backbone derive from ``AdaptationMethod``;
    multi-modal methods derive from ``MultimodalMethod``.
    """

    name: ClassVar[str] = ""
    model: nn.Module

    @abstractmethod
    def param_groups(self) -> list[dict]:
        """Optimiser parameter groups: ``[{"name", "params", "lr"}, ...]``."""

    @abstractmethod
    def loss(self, output, target) -> torch.Tensor:
        """Mean training loss of one batch."""

    def optimizer(self, weight_decay: float = 0.01) -> torch.optim.AdamW:
        """AdamW over ``param_groups`` (each group keeps its own learning rate)."""
        return torch.optim.AdamW(self.param_groups(), weight_decay=weight_decay)

    def parameter_report(self) -> ParameterReport:
        """Total and trainable parameters of the whole model (encoders, adapters, heads)."""
        return count_parameters(self.model)

    @staticmethod
    def _set_trainable(module: nn.Module, trainable: bool) -> None:
        for p in module.parameters():
            p.requires_grad_(trainable)


def classification_loss(task: Task, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits (binary: logits ``(B, 1)``, float targets ``(B,)``; multilabel: 0/1
    targets ``(B, L)``) or cross-entropy (multiclass: integer targets ``(B,)``)."""
    if task == "binary":
        return nn.functional.binary_cross_entropy_with_logits(
            logits.squeeze(-1), target.to(logits.dtype)
        )
    if task == "multilabel":
        return nn.functional.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
    return nn.functional.cross_entropy(logits, target.long())


class AdaptationMethod(Method):
    """Base class: a backbone adapted one way, with a head, an optimiser set-up and a loss.

    Subclasses set ``self.model`` (a ``Classifier``) and implement ``param_groups``. The
    backbone maps ``(B, C, X, Y, Z)`` to ``(B, F)``; the model returns logits
    ``(B, num_outputs)``. ``task="binary"`` uses one logit and BCE-with-logits on float
    targets ``(B,)`` in {0, 1}; ``"multiclass"`` uses cross-entropy on integer targets;
    ``"multilabel"`` one logit per label (``num_classes`` labels) and BCE-with-logits on
    0/1 targets ``(B, num_classes)``.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        backbone: nn.Module,
        *,
        task: Task = "binary",
        num_classes: int = 2,
        head_hidden: int | None = 128,
    ) -> None:
        if task not in ("binary", "multiclass", "multilabel"):
            raise ValueError(f"task must be binary, multiclass or multilabel, not {task!r}")
        self.task: Task = task
        self.num_outputs = 1 if task == "binary" else num_classes
        feature_dim = int(backbone.feature_dim)
        self.head = make_head(feature_dim, self.num_outputs, head_hidden)
        self.model = Classifier(backbone, self.head)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss of logits ``(B, num_outputs)`` against targets ``(B,)``."""
        return classification_loss(self.task, logits, target)


class MultimodalMethod(Method):
    """Base class of methods whose model reads several modalities (papers 2, 4 and 5).

    ``self.model(inputs)`` takes a mapping from modality name (the config's input names:
    ``ct``, ``pet``, ``fa``, ``md``, ``t1w``, ``report_text``, ``clinical``, ``genetics``) to a
    batch tensor and returns a mapping of outputs:

    - inputs: an image modality ``(B, C, X, Y, Z)``; ``report_text`` the frozen text
      encoder's token embeddings ``(B, L, D)`` (computed once, outside training); a tabular
      modality ``(B, F)``; ``report_text_mask`` bool ``(B, L)`` marks its real (not padding)
      tokens. A modality missing for the whole batch is absent from the mapping;
      one missing for some samples has ``inputs[f"{name}_present"]``, a bool ``(B,)``.
    - outputs: ``"logits"`` ``(B, num_outputs)`` for classification, ``"segmentation"``
      ``(B, 1, X, Y, Z)`` logits, ``"risk"`` ``(B,)`` log-hazard for prognosis.

    ``loss(outputs, targets)`` takes targets keyed ``"label"``, ``"mask"``, ``"time"``,
    ``"event"`` as the task needs. ``modalities`` lists what the method reads;
    ``required_modalities`` what it cannot predict without (the rest may be missing for a
    sample, as ``neuroadapt.missing_modality`` tests).
    """

    modalities: ClassVar[tuple[str, ...]] = ()
    required_modalities: ClassVar[tuple[str, ...]] = ()
