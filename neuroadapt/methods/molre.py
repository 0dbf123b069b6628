"""``molre``: mixture of low-rank experts with unsupervised soft routing (paper 3).

Paper 3 (Yoo et al., "Specializing Foundation Models via Mixture of Low-Rank Experts for
Comprehensive Head CT Analysis", arXiv 2603.00675): LoRA extended with several low-rank
adapters ("experts") per adapted layer, mixed by a router trained without any supervision
of which expert should serve which finding, for multi-label detection, with under 0.5%
added parameters. The summary gives no router details; the choices here are the common ones
and are configurable: per sample, the router maps the layer's globally average-pooled input
through a linear layer and a softmax (soft, dense routing, no load-balancing loss).

For a frozen ``nn.Conv3d`` ``W`` (``d_in -> d_out``, kernel ``k``) each expert ``e`` is a
LoRA pair ``A_e`` (Conv3d ``d_in -> r`` with ``W``'s kernel, stride and padding) and ``B_e``
(1x1x1 Conv3d ``r -> d_out``, zero-initialised, so the adapted network starts equal to the
backbone)::

    y = W x + (alpha / r) * sum_e g_e(x) B_e A_e x,    g(x) = softmax(R mean(x) + c)

Because ``B_e`` is linear, the sum is one 1x1x1 convolution of the gated, concatenated
expert features (``E r`` channels), so the experts cost one convolution each way. Per layer:
``E r (d_in k^3 + d_out) + E (d_in + 1)`` parameters.

On a transformer (paper 3 adapts ViT foundation models) each adapted ``nn.Linear`` gets the
same mixture with ``A_e``, ``B_e`` linear maps; the router reads the mean over the tokens.
Per layer: ``E r (d_in + d_out) + E (d_in + 1)`` parameters (the Conv3d formula with k = 1).

Which layers (``target_modules="auto"``): on a ViT (a backbone that declares
``lora_targets``) every Linear layer of its transformer blocks, the attention (fused qkv,
output) and MLP projections; on a bottleneck ResNet (depth 50 and more) the pointwise
(1x1x1) convolutions, its channel-mixing layers and the analogue of those linear layers;
with 4 experts of rank 2 that adds 0.44% (36 layers) to the CT foundation model's ResNet-50
x2 (every Conv3d would be 1.38%, over the paper's 0.5% budget). A basic-block ResNet (depth
10 to 34, the demo's) has no pointwise conv but its 3 shortcut projections, so there every
Conv3d is adapted (on the demo, pointwise-only MoLRE with trained norms reached pooled AUC
0.58 on adhd_dti, every conv 0.99). ``"pointwise"``, ``"linear"``, ``"all"`` (every Conv3d)
or a list of layer names choose otherwise.

Written by hand: peft has no mixture of LoRA experts for convolutional networks, and its
X-LoRA (for transformers) mixes whole trained adapters with a separate classifier rather
than training experts and a router together.
"""

from __future__ import annotations

import torch
from torch import nn

from neuroadapt.methods.base import AdaptationMethod, Task, unfreeze_norms
from neuroadapt.methods.lora import conv3d_names
from neuroadapt.methods.registry import register_method

__all__ = ["MoLRE", "MoLREConv3d", "MoLRELinear", "molre_parameter_count"]


def molre_parameter_count(layer: nn.Conv3d | nn.Linear, experts: int, r: int) -> int:
    """Trainable parameters MoLRE adds to ``layer`` (closed form, see the module docstring)."""
    if isinstance(layer, nn.Linear):
        d_in, d_out, k3 = layer.in_features, layer.out_features, 1
    else:
        d_in, d_out = layer.in_channels, layer.out_channels
        k3 = layer.kernel_size[0] * layer.kernel_size[1] * layer.kernel_size[2]
    return experts * r * (d_in * k3 + d_out) + experts * (d_in + 1)


class MoLREConv3d(nn.Module):
    """A frozen ``nn.Conv3d`` plus ``experts`` LoRA experts mixed by a soft router."""

    def __init__(self, base: nn.Conv3d, experts: int = 4, r: int = 4, alpha: float = 8.0):
        super().__init__()
        if base.groups != 1:
            raise NotImplementedError("MoLRE on grouped convolutions is not supported")
        if experts < 1 or r < 1:
            raise ValueError(f"experts and r must be >= 1, got {experts} and {r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.experts, self.r, self.scaling = experts, r, alpha / r
        self.down = nn.Conv3d(  # A_1..A_E stacked: d_in -> E r, the base kernel's geometry
            base.in_channels,
            experts * r,
            base.kernel_size,
            stride=base.stride,
            padding=base.padding,
            dilation=base.dilation,
            bias=False,
            padding_mode=base.padding_mode,
        )
        self.up = nn.Conv3d(experts * r, base.out_channels, 1, bias=False)  # [B_1 ... B_E]
        self.router = nn.Linear(base.in_channels, experts)
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)  # as peft initialises lora_A
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.router.weight)  # equal weights at the start
        nn.init.zeros_(self.router.bias)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """Routing weights ``(B, E)`` (rows sum to 1) from the pooled input ``(B, d_in, ...)``."""
        return torch.softmax(self.router(x.mean(dim=(2, 3, 4))), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.down(x)  # (B, E r, X', Y', Z')
        batch = features.shape[0]
        gated = features.view(batch, self.experts, self.r, *features.shape[2:]) * self.gates(
            x
        ).view(batch, self.experts, 1, 1, 1, 1)
        update = self.up(gated.view_as(features))
        return self.base(x) + self.scaling * update


class MoLRELinear(nn.Module):
    """A frozen ``nn.Linear`` plus ``experts`` LoRA experts mixed by a soft router that
    reads the sample's mean input over its tokens (inputs ``(B, ..., d_in)``)."""

    def __init__(self, base: nn.Linear, experts: int = 4, r: int = 4, alpha: float = 8.0):
        super().__init__()
        if experts < 1 or r < 1:
            raise ValueError(f"experts and r must be >= 1, got {experts} and {r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.experts, self.r, self.scaling = experts, r, alpha / r
        self.down = nn.Linear(base.in_features, experts * r, bias=False)  # A_1..A_E stacked
        self.up = nn.Linear(experts * r, base.out_features, bias=False)  # [B_1 ... B_E]
        self.router = nn.Linear(base.in_features, experts)
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.router.weight)
        nn.init.zeros_(self.router.bias)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """Routing weights ``(B, E)`` from the mean over the tokens of ``x`` ``(B, ..., d_in)``."""
        pooled = x.reshape(x.shape[0], -1, x.shape[-1]).mean(dim=1)
        return torch.softmax(self.router(pooled), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.down(x)  # (B, ..., E r)
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (self.experts, 1)
        gated = features.unflatten(-1, (self.experts, self.r)) * self.gates(x).view(shape)
        return self.base(x) + self.scaling * self.up(gated.flatten(-2))


def target_layers(backbone: nn.Module, targets: str | list[str]) -> list[str]:
    """Names of the layers to adapt: ``"auto"`` (a ViT's Linear layers, a bottleneck
    ResNet's pointwise convs, else every conv), ``"pointwise"`` (1x1x1 kernels),
    ``"linear"`` (every Linear of the transformer blocks), ``"all"`` (every Conv3d), or the
    given list."""
    if isinstance(targets, list):
        return targets
    if targets == "auto":
        from monai.networks.nets.resnet import ResNetBottleneck

        if callable(getattr(backbone, "lora_targets", None)):
            targets = "linear"
        elif any(isinstance(m, ResNetBottleneck) for m in backbone.modules()):
            targets = "pointwise"
        else:  # basic blocks: their only pointwise convs are the few shortcut projections
            targets = "all"
    if targets == "linear":
        return [
            name
            for name, m in backbone.named_modules()
            if isinstance(m, nn.Linear) and ".blocks." in f".{name}"
        ]
    if targets == "all":
        return conv3d_names(backbone)
    if targets == "pointwise":
        return [
            name
            for name, m in backbone.named_modules()
            if isinstance(m, nn.Conv3d) and tuple(m.kernel_size) == (1, 1, 1)
        ]
    raise ValueError(
        f"target_modules must be 'auto', 'pointwise', 'linear', 'all' or a list, not {targets!r}"
    )


def add_experts(
    backbone: nn.Module, targets: list[str], experts: int, r: int, alpha: float
) -> list[MoLREConv3d | MoLRELinear]:
    """Replace each named Conv3d or Linear of ``backbone`` by a MoLRE layer around it (in
    place)."""
    layers = []
    for name in targets:
        base = backbone.get_submodule(name)
        if isinstance(base, nn.Conv3d):
            layer = MoLREConv3d(base, experts, r, alpha)
        elif isinstance(base, nn.Linear):
            layer = MoLRELinear(base, experts, r, alpha)
        else:
            raise TypeError(
                f"{name} is a {type(base).__name__}, MoLRE adapts Conv3d and Linear layers"
            )
        parent_name, _, child = name.rpartition(".")
        setattr(backbone.get_submodule(parent_name) if parent_name else backbone, child, layer)
        layers.append(layer)
    return layers


@register_method(
    "molre",
    paper="paper 3, MoLRE (arXiv 2603.00675)",
    family="image",
    tasks=("binary", "multilabel"),
    backbones="features",
    tunable={"lr_adapters": 1e-4, "lr_head": 1e-4, "r": 2},
)
class MoLRE(AdaptationMethod):
    """Frozen backbone + MoLRE on the layers ``target_layers`` picks (a bottleneck ResNet's
    pointwise convs, every conv of a basic-block one, a ViT's attention and MLP Linear
    layers; or ``target_modules``) + MLP head; multi-label by default (one logit per
    finding, BCE each), as in paper 3. Parameter groups: ``adapters`` (experts and routers;
    with ``train_norms`` the backbone's normalisation weights) at ``lr_adapters``, ``head``
    at ``lr_head``."""

    def __init__(
        self,
        backbone: nn.Module,
        *,
        task: Task = "multilabel",
        num_classes: int = 2,
        head_hidden: int | None = 128,
        experts: int = 4,
        r: int = 2,
        alpha: float = 4.0,
        target_modules: str | list[str] = "auto",
        lr_adapters: float = 1e-4,
        lr_head: float = 1e-4,
        train_norms: bool = False,
    ) -> None:
        self._set_trainable(backbone, False)
        targets = target_layers(backbone, target_modules)
        if not targets:
            raise ValueError(
                f"the backbone has no layer matching target_modules={target_modules!r}; "
                "use 'all' or name the layers"
            )
        self.layers = add_experts(backbone, targets, experts, r, alpha)
        self.norms = unfreeze_norms(backbone) if train_norms else []
        super().__init__(backbone, task=task, num_classes=num_classes, head_hidden=head_hidden)
        self.experts, self.r, self.targets = experts, r, targets
        self.lr_adapters, self.lr_head = lr_adapters, lr_head
        self.model.train()

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [
            p
            for layer in self.layers
            for module in (layer.down, layer.up, layer.router)
            for p in module.parameters()
        ] + self.norms

    def param_groups(self) -> list[dict]:
        return [
            {"name": "adapters", "params": self.adapter_parameters(), "lr": self.lr_adapters},
            {"name": "head", "params": list(self.head.parameters()), "lr": self.lr_head},
        ]
