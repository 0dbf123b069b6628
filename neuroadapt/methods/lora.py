"""``lora``: LoRA on every 3D convolution of a frozen backbone (paper 1).

Paper 1 (Cross-Modal Fine-Tuning of 3D Convolutional Foundation Models for ADHD
Classification with Low-Rank Adaptation, arXiv 2511.06163, Sec. 2.2): each kernel, reshaped
to ``W in R^{d_out x d_in k^3}``, becomes ``W' = W + BA`` with ``B in R^{d_out x r}``,
``A in R^{r x d_in k^3}``, rank ``r = 4``; the backbone is frozen; a 2-layer MLP head (128
hidden units) classifies; AdamW with learning rates 1e-4 (adapters) and 1e-5 (head); BCE.

peft implements exactly this for ``nn.Conv3d``: ``lora_A`` is a Conv3d ``d_in -> r`` with the
layer's kernel (``r * d_in * k^3`` weights) and ``lora_B`` a 1x1x1 Conv3d ``r -> d_out``
(``d_out * r / groups``), ``B`` initialised to zero so the adapted network starts equal to
the backbone. The paper does not state ``lora_alpha``; peft's default (8, scaling 2 at r=4)
is kept and configurable.

Merging is hand-written (``merge_adapters``): peft 0.21.2's ``merge_and_unload`` fails on
1x1x1 Conv3d layers.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from peft.tuners.lora import LoraLayer
from peft.utils import load_peft_weights
from torch import nn

from neuroadapt.methods.base import AdaptationMethod, Task, unfreeze_norms
from neuroadapt.methods.registry import register_method

__all__ = ["LoRA", "conv3d_names", "default_targets", "merge_adapters"]

ADAPTER = "default"


def conv3d_names(module: nn.Module) -> list[str]:
    """Qualified names of every ``nn.Conv3d`` inside ``module`` (the layers LoRA adapts)."""
    return [name for name, m in module.named_modules() if isinstance(m, nn.Conv3d)]


def default_targets(backbone: nn.Module) -> list[str]:
    """The layers LoRA adapts unless told otherwise: those the backbone declares through
    ``lora_targets()`` (a ViT: its attention projections), else every Conv3d (paper 1)."""
    declared = getattr(backbone, "lora_targets", None)
    return declared() if callable(declared) else conv3d_names(backbone)


def merge_adapters(model: nn.Module, adapter: str = ADAPTER) -> nn.Module:
    """A copy of ``model`` with every LoRA/DoRA Conv3d or Linear folded back into a plain
    layer of its kind.

    LoRA: ``W <- W + scaling * (B.flatten(1) @ A.flatten(1)).view_as(W)``. DoRA:
    ``W <- m / ||W + scaling*dW||_c * (W + scaling*dW)`` with the norm per output channel
    (peft's definition); biases are unchanged in both. Hand-written because peft 0.21.2's
    ``merge_and_unload`` crashes on 1x1x1 Conv3d. The input may be a ``PeftModel`` or any
    module containing peft LoRA layers; the copy contains no peft layers.
    """
    merged = copy.deepcopy(model)
    if isinstance(merged, PeftModel):
        merged = merged.get_base_model()
    replacements: list[tuple[nn.Module, str, nn.Module]] = []
    for name, module in merged.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        base = module.get_base_layer()
        if not isinstance(base, (nn.Conv3d, nn.Linear)):
            raise TypeError(f"{name}: merge_adapters handles Conv3d and Linear, not {type(base)}")
        if isinstance(base, nn.Conv3d) and base.groups != 1:
            raise NotImplementedError(f"{name}: merging grouped convolutions is not supported")
        a = module.lora_A[adapter].weight  # (r, d_in, k, k, k) or, for Linear, (r, d_in)
        b = module.lora_B[adapter].weight  # (d_out, r, 1, 1, 1) or (d_out, r)
        delta = (b.flatten(1) @ a.flatten(1)).view_as(base.weight) * module.scaling[adapter]
        weight = base.weight.detach() + delta.detach()
        if adapter in module.lora_magnitude_vector:
            magnitude = module.lora_magnitude_vector[adapter].weight.detach().reshape(-1)
            norm = weight.flatten(1).norm(p=2, dim=1)  # (d_out,), like magnitude
            weight = weight * (magnitude / norm).view(-1, *([1] * (weight.dim() - 1)))
        plain = copy.deepcopy(base)
        plain.weight = nn.Parameter(weight, requires_grad=base.weight.requires_grad)
        parent_name, _, child = name.rpartition(".")
        replacements.append((merged.get_submodule(parent_name), child, plain))
    for parent, child, plain in replacements:
        setattr(parent, child, plain)
    return merged


@register_method(
    "lora",
    paper="paper 1 (arXiv 2511.06163)",
    family="image",
    tasks=("binary", "multilabel"),
    backbones="features",
    tunable={"lr_adapters": 1e-4, "lr_head": 1e-5, "r": 4},
)
class LoRA(AdaptationMethod):
    """Frozen backbone + peft LoRA (rank ``r``) on every Conv3d, or on the layers the backbone
    declares (a ViT: attention projections), + trained MLP head.

    ``self.model.backbone`` is a ``PeftModel`` around the given backbone (which peft
    modifies in place). Parameter groups: ``adapters`` at ``lr_adapters`` (1e-4) and
    ``head`` at ``lr_head`` (1e-5), as in paper 1. ``train_norms`` (``training.train_norms``,
    not in the paper) also trains the backbone's normalisation weights, in ``adapters``.
    """

    use_dora: bool = False

    def __init__(
        self,
        backbone: nn.Module,
        *,
        task: Task = "binary",
        num_classes: int = 2,
        head_hidden: int | None = 128,
        r: int = 4,
        lora_alpha: float = 8,
        lora_dropout: float = 0.0,
        target_modules: list[str] | None = None,
        lr_adapters: float = 1e-4,
        lr_head: float = 1e-5,
        train_norms: bool = False,
    ) -> None:
        targets = target_modules if target_modules is not None else default_targets(backbone)
        if not targets:
            raise ValueError("the backbone has no layer to adapt (no Conv3d, no declared targets)")
        config = LoraConfig(
            r=r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=targets,
            use_dora=self.use_dora,
            bias="none",
        )
        feature_dim = backbone.feature_dim
        peft_backbone = get_peft_model(backbone, config)  # freezes all non-adapter weights
        peft_backbone.feature_dim = feature_dim
        if train_norms:  # trained with the adapters (adapter_parameters takes them)
            unfreeze_norms(peft_backbone)
        super().__init__(peft_backbone, task=task, num_classes=num_classes, head_hidden=head_hidden)
        self.r, self.lora_alpha, self.targets = r, lora_alpha, targets
        self.lr_adapters, self.lr_head = lr_adapters, lr_head
        self.model.train()

    @property
    def peft_backbone(self) -> PeftModel:
        return self.model.backbone

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of the backbone: A, B, for DoRA the magnitudes, and with
        ``train_norms`` the normalisation weights."""
        return [p for p in self.peft_backbone.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict]:
        return [
            {"name": "adapters", "params": self.adapter_parameters(), "lr": self.lr_adapters},
            {"name": "head", "params": list(self.head.parameters()), "lr": self.lr_head},
        ]

    def merged_model(self) -> nn.Module:
        """A plain ``Classifier``-shaped copy with the adapters folded into the convs."""
        merged = copy.deepcopy(self.model)
        merged.backbone = merge_adapters(self.peft_backbone)
        return merged

    def save_adapters(self, directory: str | Path) -> list[Path]:
        """Write the adapters (peft format) and the head to ``directory``; returns the files.

        ``adapter_config.json`` + ``adapter_model.safetensors`` (+ a README.md model card)
        from peft's ``save_pretrained`` and ``head.pt`` (the head's state dict); the frozen
        backbone is not written, so the files are small.
        """
        directory = Path(directory)
        self.peft_backbone.save_pretrained(str(directory))
        torch.save(self.head.state_dict(), directory / "head.pt")
        return sorted(p for p in directory.iterdir() if p.is_file())

    def load_adapters(self, directory: str | Path) -> None:
        """Load adapters and head written by ``save_adapters`` into this (same-backbone) model."""
        directory = Path(directory)
        weights = load_peft_weights(str(directory), device="cpu")
        result = set_peft_model_state_dict(self.peft_backbone, weights, adapter_name=ADAPTER)
        missing = [k for k in result.missing_keys if "lora_" in k]
        if result.unexpected_keys or missing:
            raise ValueError(
                f"{directory}: adapters do not fit this model "
                f"(unexpected {result.unexpected_keys[:5]}, missing {missing[:5]})"
            )
        self.head.load_state_dict(torch.load(directory / "head.pt", weights_only=True))

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapter tensors alone (peft's ``get_peft_model_state_dict``)."""
        return get_peft_model_state_dict(self.peft_backbone, adapter_name=ADAPTER)
