"""``linear_probe``: frozen backbone, trained head.

The first baseline named in the notes on paper 1 (shared/papers/1-conv-lora-ct-to-mri-adhd.md,
"Baseline Probe: train only the MLP head with backbone completely frozen"). In the pipeline
its head is the experiment's (``training.head_hidden``: paper 1's 128-unit MLP by default,
the same head every other method trains), so the probe measures what the frozen features
carry under the comparison's head; ``training.head_hidden: null`` gives the linear probe of
a foundation model's features (Pai et al. 2024, the CT model paper 1 adapts). Used as a
library class, ``head_hidden`` defaults to ``None`` (linear).
"""

from __future__ import annotations

from torch import nn

from neuroadapt.methods.base import AdaptationMethod, Task
from neuroadapt.methods.registry import register_method


@register_method(
    "linear_probe",
    paper="baseline of paper 1 (arXiv 2511.06163)",
    family="image",
    tasks=("binary", "multilabel"),
    backbones="features",
    tunable={"lr_head": 1e-3},
)
class LinearProbe(AdaptationMethod):
    """Backbone frozen (BatchNorm in eval mode); only the head trains, at ``lr_head``."""

    def __init__(
        self,
        backbone: nn.Module,
        *,
        task: Task = "binary",
        num_classes: int = 2,
        head_hidden: int | None = None,
        lr_head: float = 1e-3,
    ) -> None:
        super().__init__(backbone, task=task, num_classes=num_classes, head_hidden=head_hidden)
        self._set_trainable(backbone, False)
        self.lr_head = lr_head
        self.model.train()

    def param_groups(self) -> list[dict]:
        return [{"name": "head", "params": list(self.head.parameters()), "lr": self.lr_head}]
