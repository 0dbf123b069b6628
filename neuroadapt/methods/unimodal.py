"""Paper 4's phase 1: one uni-modal model per modality, fine-tuned with a linear head.

Paper 4 ("Joint Adaptation of Uni-modal Foundation Models for Multi-modal Alzheimer's Disease
Diagnosis", ICLR 2026, OpenReview gPTjQxC74G) first adds "a linear classification head" to
each modality's foundation model and fine-tunes it on that modality alone with cross-entropy;
phase 2 (``anchored_qformer``, and the output-level baselines ``late_fusion`` and
``feature_concat``) then freezes those models and reuses their heads. The uni-modal models
are also the paper's uni-modal baselines (its Table 1 rows C, F, S, G).

Here each is a method of its own, ``unimodal_<modality>`` (``image``, ``report_text``,
``clinical``, ``genetics``), trained by the ordinary train job per fold: selected on the
fold's validation part like every method, its predictions of the test part are its rows of
``metrics.tsv``, and the phase-2 train jobs of the same fold load its ``best_auc`` model
(:func:`neuroadapt.train.multimodal_classifier`). Choices where the summary is silent:

- the whole encoder trains (``lr_encoder``) with the head (``lr_head``); the demo's non-image
  encoders have no pretrained weights, so phase 1 trains them from their initialisation;
- the head is the experiment's head (``training.head_hidden``; ``null``, linear, in paper 4's
  preset and demo), so the phase-2 heads it seeds have the same shape;
- a sample without the modality is left out of the loss, and its prediction is logit 0
  (probability 0.5, "no information"): its AUC is over every test subject, as the fused
  methods' are.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from neuroadapt.experiments import UNIMODAL_PREFIX
from neuroadapt.methods.anchored_qformer import (
    MultimodalEncoderMethod,
    batch_presence,
    encode_pooled,
    rounds_loss,
    token_mask,
    zero_absent,
)
from neuroadapt.methods.base import Task
from neuroadapt.methods.registry import register_method
from neuroadapt.models.classifier import make_head

__all__ = ["UnimodalClassifier", "UnimodalModel", "unimodal_method"]


def unimodal_method(modality: str) -> str:
    """The name of ``modality``'s phase-1 method."""
    return f"{UNIMODAL_PREFIX}{modality}"


class UnimodalModel(nn.Module):
    """One encoder (trainable) + its head, reading ``inputs[modality]``.

    ``forward(inputs)`` -> ``{"logits": (B, O), "round_logits": (B, 1, O), "round_present":
    (B, 1)}``; absent samples get logit 0."""

    def __init__(self, modality: str, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.modality = modality
        self.encoder = encoder
        self.head = head

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        _, flags = batch_presence(inputs, [self.modality], require=())
        present = flags[self.modality]
        x = zero_absent(inputs[self.modality], present)
        features = encode_pooled(self.encoder, x, token_mask(inputs, self.modality, present))
        logits = self.head(features)
        logits = torch.where(present.unsqueeze(1), logits, torch.zeros_like(logits))
        return {
            "logits": logits,
            "round_logits": logits.unsqueeze(1),
            "round_present": present.unsqueeze(1),
        }


class UnimodalClassifier(MultimodalEncoderMethod):
    """Phase-1 model of one modality (see the module docstring): its encoder fine-tuned with
    a head on that modality alone. ``encoders`` may hold every modality of the experiment;
    only ``self.modality``'s is used. Parameter groups ``encoder`` (``lr_encoder``) and
    ``head`` (``lr_head``); the loss is over the samples that have the modality."""

    modality: str = ""

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        *,
        task: Task = "binary",
        num_classes: int = 2,
        head_hidden: int | None = None,
        lr_encoder: float = 1e-4,
        lr_head: float = 1e-3,
    ) -> None:
        if self.modality not in encoders:
            raise ValueError(
                f"{self.name} needs the {self.modality!r} input; the experiment gives "
                f"{sorted(encoders)}: add it to the experiment's inputs"
            )
        encoder = encoders[self.modality]
        self._setup({self.modality: encoder}, task, num_classes)
        self._set_trainable(encoder, True)  # phase 1 fine-tunes the whole encoder
        self.head = make_head(int(encoder.feature_dim), self.num_outputs, head_hidden)
        self.model = UnimodalModel(self.modality, encoder, self.head)
        self.rounds = (self.modality,)
        self.required_modalities = (self.modality,)
        self.lr_encoder, self.lr_head = lr_encoder, lr_head
        self.model.train()

    def loss(self, output, target) -> torch.Tensor:
        """Mean loss over the batch's samples that have the modality (0 if none has)."""
        label = target["label"] if isinstance(target, Mapping) else target
        present = output["round_present"]
        if not bool(present.any()):
            return output["logits"].sum() * 0.0  # keeps the graph; no sample to learn from
        return rounds_loss(self.task, output["round_logits"], present, label)

    def param_groups(self) -> list[dict]:
        return [
            {
                "name": "encoder",
                "params": list(self.model.encoder.parameters()),
                "lr": self.lr_encoder,
            },
            {"name": "head", "params": list(self.head.parameters()), "lr": self.lr_head},
        ]


@register_method(
    "unimodal_image",
    paper="phase 1 of paper 4 (ICLR 2026, OpenReview gPTjQxC74G)",
    family="multimodal",
    tasks=("binary",),
    backbones="vit",
    tunable={"lr_encoder": 1e-4, "lr_head": 1e-3},
)
class UnimodalImage(UnimodalClassifier):
    """Phase 1 of paper 4 on the image (FA/MD) alone: the ViT fine-tuned with a head."""

    modality = "image"


@register_method(
    "unimodal_report_text",
    paper="phase 1 of paper 4 (ICLR 2026, OpenReview gPTjQxC74G)",
    family="multimodal",
    tasks=("binary",),
    backbones="vit",
    needs_inputs=("report_text",),
    tunable={"lr_encoder": 1e-4, "lr_head": 1e-3},
)
class UnimodalReportText(UnimodalClassifier):
    """Phase 1 of paper 4 on the report text alone: its token encoder trained with a head
    on the frozen text encoder's embeddings."""

    modality = "report_text"


@register_method(
    "unimodal_clinical",
    paper="phase 1 of paper 4 (ICLR 2026, OpenReview gPTjQxC74G)",
    family="multimodal",
    tasks=("binary",),
    backbones="vit",
    needs_inputs=("clinical",),
    tunable={"lr_encoder": 1e-4, "lr_head": 1e-3},
)
class UnimodalClinical(UnimodalClassifier):
    """Phase 1 of paper 4 on the clinical table alone: its token encoder with a head."""

    modality = "clinical"


@register_method(
    "unimodal_genetics",
    paper="phase 1 of paper 4 (ICLR 2026, OpenReview gPTjQxC74G)",
    family="multimodal",
    tasks=("binary",),
    backbones="vit",
    needs_inputs=("genetics",),
    tunable={"lr_encoder": 1e-4, "lr_head": 1e-3},
)
class UnimodalGenetics(UnimodalClassifier):
    """Phase 1 of paper 4 on the genotypes alone: its token encoder with a head."""

    modality = "genetics"
