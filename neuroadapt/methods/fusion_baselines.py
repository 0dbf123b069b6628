"""Output-level fusion baselines of paper 4: ``late_fusion`` and ``feature_concat``.

Paper 4 ("Joint Adaptation of Uni-modal Foundation Models for Multi-modal Alzheimer's Disease
Diagnosis", ICLR 2026, OpenReview gPTjQxC74G) compares its input-level anchored interaction
(``anchored_qformer``) with fusions at the output of the frozen uni-modal models: Late
Fusion (Table 1) and Feature Concatenation (Table 5). The summary gives no details; the
choices here are the usual ones and are documented per class. Both take the same mapping
modality name -> frozen encoder as ``anchored_qformer`` and read the same inputs
(``inputs[m]``, ``inputs[f"{m}_present"]`` bool ``(B,)``, ``inputs[f"{m}_mask"]`` for padded
token inputs); any encoder with ``forward(x) -> (B, D)`` and ``feature_dim`` works
(``TabularMLP`` included). Encoders run without gradient: they are frozen.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from neuroadapt.methods.anchored_qformer import (
    AGGREGATIONS,
    LOSS_ON,
    MultimodalEncoderMethod,
    aggregate_logits,
    batch_presence,
    encode_pooled,
    token_mask,
    zero_absent,
)
from neuroadapt.methods.base import Task, frozen_pass
from neuroadapt.methods.registry import register_method
from neuroadapt.models.classifier import make_head

__all__ = ["FeatureConcat", "FeatureConcatModel", "LateFusion", "LateFusionModel"]


def _pooled_features(
    encoders: nn.ModuleDict, inputs: Mapping[str, torch.Tensor]
) -> tuple[int, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Batch size, presence ``{m: (B,)}`` and frozen pooled features ``{m: (B, D_m)}`` of the
    modalities in ``inputs`` (absent samples' inputs zeroed first); raises ``ValueError``
    for a sample without any modality."""
    batch, present = batch_presence(inputs, list(encoders))
    features = {}
    with frozen_pass(*inputs.values()):  # frozen encoders: no activations kept for backward
        for m, encoder in encoders.items():
            if m in inputs:
                x = zero_absent(inputs[m], present[m])
                features[m] = encode_pooled(encoder, x, token_mask(inputs, m, present[m]))
    return batch, present, features


class LateFusionModel(nn.Module):
    """Frozen encoders + one head per modality; logits aggregated over present modalities."""

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        heads: Mapping[str, nn.Module],
        task: Task,
        num_outputs: int,
        aggregate: str,
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.heads = nn.ModuleDict(dict(heads))
        self.task: Task = task
        self.num_outputs = num_outputs
        self.aggregate = aggregate

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-> ``{"logits": (B, O), "round_logits": (B, M, O), "round_present": (B, M)}``."""
        batch, present, features = _pooled_features(self.encoders, inputs)
        reference = next(iter(features.values()))
        rounds = [
            self.heads[m](features[m])
            if m in features
            else reference.new_zeros(batch, self.num_outputs)  # masked out by its flag
            for m in self.encoders
        ]
        logits = torch.stack(rounds, dim=1)
        flags = torch.stack([present[m] for m in self.encoders], dim=1)
        return {
            "logits": aggregate_logits(logits, flags, self.task, self.aggregate),
            "round_logits": logits,
            "round_present": flags,
        }


@register_method(
    "late_fusion",
    paper="baseline of paper 4 (ICLR 2026, OpenReview gPTjQxC74G)",
    family="multimodal",
    tasks=("binary",),
    backbones="vit",
    tunable={"lr_heads": 1e-3},
    uses_phase1=True,
)
class LateFusion(MultimodalEncoderMethod):
    """Late Fusion: each frozen encoder + its own trained head; predictions averaged.

    Heads are linear by default (the phase-1 heads of paper 4; ``head_hidden`` gives an MLP).
    Aggregation over the modalities present for a sample: mean of logits by default
    (``aggregate="logit"``), or of probabilities (``"prob"``, see ``aggregate_logits``).
    Training (``loss_on``): ``"rounds"`` (default) trains each head on its own modality's
    loss over the samples that have it, decision-level late fusion and what
    ``anchored_qformer`` with ``num_queries=0`` reduces to; ``"aggregate"`` trains on the
    fused logits. One parameter group ``heads`` (``lr_heads``).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        *,
        task: Task = "binary",
        num_classes: int = 2,
        head_hidden: int | None = None,
        aggregate: str = "logit",
        loss_on: str = "rounds",
        lr_heads: float = 1e-3,
    ) -> None:
        self._setup(encoders, task, num_classes)
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {AGGREGATIONS}, not {aggregate!r}")
        if loss_on not in LOSS_ON:
            raise ValueError(f"loss_on must be one of {LOSS_ON}, not {loss_on!r}")
        heads = {
            m: make_head(int(e.feature_dim), self.num_outputs, head_hidden)
            for m, e in encoders.items()
        }
        self.model = LateFusionModel(encoders, heads, task, self.num_outputs, aggregate)
        self.rounds = tuple(encoders)
        self.aggregate, self.loss_on, self.lr_heads = aggregate, loss_on, lr_heads
        self.model.train()

    def param_groups(self) -> list[dict]:
        return [
            {"name": "heads", "params": list(self.model.heads.parameters()), "lr": self.lr_heads}
        ]


class FeatureConcatModel(nn.Module):
    """Frozen pooled features of every modality + presence flags, concatenated -> head."""

    def __init__(self, encoders: Mapping[str, nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.head = head

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-> ``{"logits": (B, O)}`` from ``[f_1, ..., f_M, flags]`` ``(B, sum D_m + M)``."""
        batch, present, features = _pooled_features(self.encoders, inputs)
        reference = next(iter(features.values()))
        parts = []
        for m, encoder in self.encoders.items():
            if m in features:
                keep = present[m].unsqueeze(1)
                parts.append(torch.where(keep, features[m], torch.zeros_like(features[m])))
            else:
                parts.append(reference.new_zeros(batch, int(encoder.feature_dim)))
        flags = torch.stack([present[m] for m in self.encoders], dim=1).to(reference.dtype)
        return {"logits": self.head(torch.cat([*parts, flags], dim=1))}


@register_method(
    "feature_concat",
    paper="baseline of paper 4 (ICLR 2026, OpenReview gPTjQxC74G)",
    family="multimodal",
    tasks=("binary",),
    backbones="vit",
    tunable={"lr_head": 1e-3},
    uses_phase1=True,
)
class FeatureConcat(MultimodalEncoderMethod):
    """Feature Concatenation: pooled frozen features concatenated -> trained MLP head.

    A modality missing for a sample contributes zeros; one presence flag per modality (1 =
    present) is appended, so the head can tell "absent" from "features near zero" (zero
    imputation with missingness indicators). Head: ``make_head(sum D_m + M, O,
    head_hidden)`` (2-layer MLP with 128 hidden units by default, ``None``: linear). One
    parameter group ``head`` (``lr_head``).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        *,
        task: Task = "binary",
        num_classes: int = 2,
        head_hidden: int | None = 128,
        lr_head: float = 1e-3,
    ) -> None:
        self._setup(encoders, task, num_classes)
        width = sum(int(e.feature_dim) for e in encoders.values()) + len(encoders)
        self.head = make_head(width, self.num_outputs, head_hidden)
        self.model = FeatureConcatModel(encoders, self.head)
        self.lr_head = lr_head
        self.model.train()

    def param_groups(self) -> list[dict]:
        return [{"name": "head", "params": list(self.head.parameters()), "lr": self.lr_head}]
