"""3D image backbones behind one interface, a registry by name, and the checkpoint loader.

Every backbone is an ``nn.Module`` that maps a volume ``(B, C, X, Y, Z)`` to pooled features
``(B, feature_dim)`` (``forward``) and, through ``forward_features``, also returns its hidden
states (for a ResNet: the output of each of its four stages, ``(B, C_i, X_i, Y_i, Z_i)``).

The CT foundation model of paper 1 is taken to be the "foundation model for cancer imaging
biomarkers" (Pai et al., Nat. Mach. Intell. 2024): MONAI ``resnet50(n_input_channels=1,
widen_factor=2, conv1_t_stride=2, feed_forward=False, bias_downsample=True)``, 4096-d
features, SimCLR-pretrained on 50^3 CT lesion patches (1 mm, HU normalised as
``(x + 1024) / 3072``). Smaller members of the same family (ResNet-10/18, narrow) serve CPU
demos. The total down-sampling of this family is 32 per axis: in training mode with batch 1
the input must be larger than 32^3 (MONAI/BatchNorm fails on a 1x1x1 deepest map).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import resnet as monai_resnet
from torch import nn

from neuroadapt.errors import InputError
from neuroadapt.io import sha256_of

__all__ = [
    "BACKBONES",
    "BackboneOutput",
    "ResNetBackbone",
    "available_backbones",
    "extract_state_dict",
    "get_backbone",
    "inflate_stem",
    "load_pretrained",
    "register_backbone",
    "sha256_of",
    "takes_image_size",
]

#: Containers under which published checkpoints keep their weights, tried in this order.
STATE_DICT_KEYS: tuple[str, ...] = ("trunk_state_dict", "state_dict", "model_state_dict", "model")
#: Key prefixes written by DataParallel, Lightning/SSL wrappers and our own wrapper.
KEY_PREFIXES: tuple[str, ...] = ("module.", "model.", "trunk.", "backbone.", "encoder.", "net.")


@dataclass(frozen=True)
class BackboneOutput:
    """Pooled features ``(B, feature_dim)`` and hidden states (one tensor per stage)."""

    pooled: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]


class ResNetBackbone(nn.Module):
    """A MONAI 3D ResNet without its classification layer, as a feature extractor.

    Input ``(B, in_channels, X, Y, Z)`` (any spatial size larger than 32 per axis in
    training mode with batch 1); output ``(B, feature_dim)`` after global average pooling.
    The MONAI network lives in ``self.net`` so checkpoints of the bare MONAI ResNet load
    into it unchanged; ``stem_key`` names its first kernel, which ``load_pretrained``
    inflates when a checkpoint has another number of input channels.
    """

    stem_key = "conv1.weight"

    def __init__(
        self,
        depth: int,
        in_channels: int = 1,
        widen_factor: float = 1.0,
        conv1_t_stride: int = 2,
        bias_downsample: bool = True,
    ) -> None:
        super().__init__()
        factory = getattr(monai_resnet, f"resnet{depth}", None)
        if factory is None:
            raise ValueError(f"MONAI has no resnet{depth}; use 10, 18, 34, 50, 101, 152 or 200")
        self.config: dict[str, Any] = {
            "depth": depth,
            "in_channels": in_channels,
            "widen_factor": widen_factor,
            "conv1_t_stride": conv1_t_stride,
            "bias_downsample": bias_downsample,
        }
        self._factory: Callable[..., nn.Module] = factory
        self.net = self._build()
        self.in_channels = in_channels
        self.feature_dim: int = self.net.layer4[-1].expansion * int(512 * widen_factor)

    def _build(self) -> monai_resnet.ResNet:
        c = self.config
        return self._factory(
            n_input_channels=c["in_channels"],
            widen_factor=c["widen_factor"],
            conv1_t_stride=c["conv1_t_stride"],
            feed_forward=False,
            bias_downsample=c["bias_downsample"],
        )

    def reset_parameters(self) -> None:
        """Re-draw every weight with MONAI's own initialisation (Kaiming for convs)."""
        self.net.load_state_dict(self._build().state_dict())

    def forward_features(self, x: torch.Tensor) -> BackboneOutput:
        """Pooled features and the four stage outputs of ``x`` ``(B, C, X, Y, Z)``.

        Hand-written because MONAI's ``ResNet.forward`` returns only the pooled vector; it
        repeats that forward step by step (the test checks both agree).
        """
        net = self.net
        h = net.act(net.bn1(net.conv1(x)))
        if not net.no_max_pool:
            h = net.maxpool(h)
        stages = []
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            h = layer(h)
            stages.append(h)
        pooled = net.avgpool(h).flatten(1)
        return BackboneOutput(pooled=pooled, hidden_states=tuple(stages))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` -> pooled features ``(B, feature_dim)``."""
        return self.net(x)


BACKBONES: dict[str, Callable[..., ResNetBackbone]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., ResNetBackbone]], Callable]:
    """Decorator: make a backbone factory available to ``get_backbone(name)``."""

    def decorate(factory: Callable[..., ResNetBackbone]) -> Callable[..., ResNetBackbone]:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = factory
        return factory

    return decorate


@register_backbone("resnet50_w2")
def resnet50_w2(in_channels: int = 1) -> ResNetBackbone:
    """Paper 1's CT foundation model: ResNet-50, widen factor 2, 4096-d features."""
    return ResNetBackbone(50, in_channels, widen_factor=2.0)


@register_backbone("resnet18_w05")
def resnet18_w05(in_channels: int = 1) -> ResNetBackbone:
    """CPU demo size: ResNet-18 at half width, 256-d features."""
    return ResNetBackbone(18, in_channels, widen_factor=0.5)


@register_backbone("resnet10_w025")
def resnet10_w025(in_channels: int = 1) -> ResNetBackbone:
    """Test size: ResNet-10 at quarter width, 128-d features."""
    return ResNetBackbone(10, in_channels, widen_factor=0.25)


def takes_image_size(name: str) -> bool:
    """Whether backbone ``name``'s factory lets the volume size be set (``img_size``): the
    demo sizes do; the paper sizes fix it to their pretrained position embeddings."""
    import inspect

    return "img_size" in inspect.signature(BACKBONES[name]).parameters


def available_backbones() -> list[str]:
    """Names accepted by ``get_backbone``."""
    return sorted(BACKBONES)


def get_backbone(
    name: str,
    in_channels: int = 1,
    weights: str | Path | None = None,
    sha256: str | None = None,
    **kwargs: Any,
) -> ResNetBackbone:
    """Build backbone ``name`` for ``in_channels`` input channels.

    With ``weights`` (a local checkpoint file) its SHA-256 must equal ``sha256`` and the
    weights are loaded by ``load_pretrained``; without, the backbone keeps a random
    initialisation and a warning says so loudly.
    """
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    backbone = BACKBONES[name](in_channels=in_channels, **kwargs)
    if weights is None:
        warnings.warn(
            f"backbone {name!r}: NO PRETRAINED WEIGHTS given, using RANDOM initialisation. "
            "Results are not those of a foundation model; name a checkpoint file and its "
            "SHA-256 in the config to load one.",
            UserWarning,
            stacklevel=2,
        )
    else:
        if sha256 is None:
            raise InputError(
                weights,
                "no SHA-256 checksum given for this checkpoint",
                "add its checksum (sha256sum FILE) to the config next to the weights path",
            )
        load_pretrained(backbone, weights, sha256)
    return backbone


def extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The bare state dict of a checkpoint, whatever container and key prefixes it uses.

    Accepts a state dict itself or one nested under ``trunk_state_dict`` / ``state_dict`` /
    ``model_state_dict`` / ``model``, and strips leading ``module.``, ``model.``, ``trunk.``,
    ``backbone.``, ``encoder.`` and ``net.`` prefixes (repeatedly: ``module.trunk.conv1``).
    """
    for key in STATE_DICT_KEYS:
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    state: dict[str, torch.Tensor] = {}
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            continue
        stripped = True
        while stripped:
            stripped = False
            for prefix in KEY_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        state[key] = value
    return state


def inflate_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Stem kernel ``(C_out, C_in, k, k, k)`` -> ``(C_out, in_channels, k, k, k)``.

    Averages over the checkpoint's input channels and repeats the mean divided by
    ``in_channels``, so that an input with the same image in every channel gives the same
    response as that image in the original network.
    """
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, *([1] * (weight.dim() - 2))) / in_channels


def load_pretrained(backbone: nn.Module, path: str | Path, sha256: str) -> list[str]:
    """Load a local checkpoint into ``backbone`` after checking its SHA-256.

    Loads with ``torch.load(weights_only=True)`` (no pickled code runs), handles the
    containers and prefixes of ``extract_state_dict``, inflates the stem when the
    checkpoint's input channels differ from the backbone's, and requires every backbone
    weight to be present with its shape. Returns the checkpoint keys that were not used
    (e.g. a SimCLR projection head), which are also reported in a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file not found", "check the weights path in the config")
    actual = sha256_of(path)
    if actual.lower() != sha256.strip().lower():
        raise InputError(
            path,
            f"SHA-256 checksum mismatch (file has {actual}, config expects {sha256})",
            "download the checkpoint again (it may be truncated or a different release) or "
            "correct the sha256 value in the config",
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file and the fix
        raise InputError(
            path, f"not a weights-only PyTorch checkpoint ({error})", "export a plain state dict"
        ) from error
    if not isinstance(checkpoint, Mapping):
        raise InputError(path, "checkpoint is not a dict of tensors", "save a state dict")
    state = extract_state_dict(checkpoint)
    target = backbone.net.state_dict()
    stem = backbone.stem_key
    if stem in state and state[stem].shape[1] != target[stem].shape[1]:
        state[stem] = inflate_stem(state[stem], target[stem].shape[1])
    missing = sorted(k for k in target if k not in state)
    wrong = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    )
    if missing or wrong:
        raise InputError(
            path,
            f"checkpoint does not fit backbone {backbone.config} "
            f"({len(missing)} missing, {len(wrong)} of other shape)",
            "use the checkpoint of this architecture or pick the matching backbone name",
            details=[f"missing {k}" for k in missing[:20]] + wrong[:20],
        )
    unused = sorted(k for k in state if k not in target)
    backbone.net.load_state_dict({k: state[k] for k in target})
    if unused:
        warnings.warn(
            f"{path}: {len(unused)} checkpoint tensors not used by the backbone "
            f"(e.g. {', '.join(unused[:5])})",
            UserWarning,
            stacklevel=2,
        )
    return unused
