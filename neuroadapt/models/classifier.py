"""A backbone with a classification head, keeping frozen BatchNorm layers in eval mode."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Classifier", "make_head"]


def make_head(feature_dim: int, num_outputs: int, hidden: int | None = 128) -> nn.Module:
    """Head on pooled features ``(B, feature_dim)`` -> logits ``(B, num_outputs)``.

    ``hidden=None`` gives a linear layer (linear probe); otherwise the 2-layer MLP of
    paper 1 (Linear -> ReLU -> Linear, ``hidden`` units, 128 in the paper).
    """
    if hidden is None:
        return nn.Linear(feature_dim, num_outputs)
    return nn.Sequential(
        nn.Linear(feature_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_outputs)
    )


class Classifier(nn.Module):
    """``backbone`` (volume ``(B, C, X, Y, Z)`` -> ``(B, F)``) followed by ``head`` -> logits.

    ``train(True)`` puts every BatchNorm layer whose parameters are all frozen back into eval
    mode, so a frozen backbone's running statistics never change (in train mode BatchNorm
    would update them even though no gradient reaches it).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` -> logits ``(B, num_outputs)``."""
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in module.parameters()
                ):
                    module.eval()
        return self
