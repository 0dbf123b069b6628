"""``scratch``: the same network trained from a random initialisation.

The "no pre-training" ablation proposed in the notes on paper 1 ("Initialize with random
weights (no CT pre-training)"): it isolates what the CT foundation model contributes.
Whatever weights the given backbone holds are re-drawn with MONAI's initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from neuroadapt.methods.base import AdaptationMethod, Task
from neuroadapt.methods.registry import register_method


@register_method(
    "scratch",
    paper="no-pretraining ablation of paper 1 (arXiv 2511.06163)",
    family="image",
    tasks=("binary", "multilabel"),
    backbones="features",
    tunable={"lr": 1e-4},
)
class Scratch(AdaptationMethod):
    """Backbone re-initialised (``backbone.reset_parameters()``), everything trains at ``lr``."""

    def __init__(
        self,
        backbone: nn.Module,
        *,
        task: Task = "binary",
        num_classes: int = 2,
        head_hidden: int | None = 128,
        lr: float = 1e-4,
        seed: int | None = None,
    ) -> None:
        if seed is not None:
            torch.manual_seed(seed)
        backbone.reset_parameters()
        super().__init__(backbone, task=task, num_classes=num_classes, head_hidden=head_hidden)
        self._set_trainable(backbone, True)
        self.lr = lr
        self.model.train()

    def param_groups(self) -> list[dict]:
        return [{"name": "all", "params": list(self.model.parameters()), "lr": self.lr}]
