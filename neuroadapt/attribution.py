"""Attribution maps of a trained model for one sample, with Captum.

Three attributions, each a non-negative map ``(X, Y, Z)`` on the model-ready grid:

* ``integrated_gradients`` (Sundararajan et al. 2017): path integral of the gradient from a
  zero baseline (background, as outside the brain) to the sample; the map is the absolute
  attribution summed over the input channels. Its steps are one batch.
* ``grad_cam`` (Selvaraju et al. 2017): class-weighted activations of a ResNet stage, ReLU,
  upsampled trilinearly to the input grid. The stage is the deepest one whose map still has
  ``grad_cam_min_size`` voxels per axis: on the demo's 32^3 inputs the last block's map is
  1x1x1 and cannot localise anything, at paper size (128^3) the last block is used. Only for
  ResNet backbones (a ViT or UNETR has no convolutional map at the end).
* ``occlusion`` (Zeiler & Fergus 2014): the drop of the output when a cube of
  ``occlusion_window`` voxels (all channels) is set to zero, model-agnostic; the
  perturbations are evaluated in batches.

``forward`` maps images ``(B, C, X, Y, Z)`` to the explained score ``(B,)`` (a logit or a
risk), see the tasks' ``attribution_forward``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from neuroadapt.errors import ConfigError
from neuroadapt.spec import spec_from_mapping

if TYPE_CHECKING:  # torch is imported where it is used: the config check runs without it
    import torch

__all__ = [
    "ATTRIBUTIONS",
    "InterpretSettings",
    "attribute",
    "grad_cam_layer",
    "interpret_settings",
    "merged_interpret",
]

ATTRIBUTIONS = ("integrated_gradients", "grad_cam", "occlusion")


@dataclass(frozen=True)
class InterpretSettings:
    """The config's ``interpret`` section: which attributions, and their cost."""

    enabled: bool = True
    attributions: tuple[str, ...] = ATTRIBUTIONS
    steps: int = 32  # integrated gradients: Gauss-Legendre points on the path
    occlusion_window: int = 4  # voxels per axis (and stride) of the occluded cube
    grad_cam_min_size: int = 4  # smallest map (voxels per axis) Grad-CAM may use
    batch_size: int = 32  # perturbations (occlusion) evaluated per forward pass

    def check(self, where: str) -> None:
        unknown = sorted(set(self.attributions) - set(ATTRIBUTIONS))
        if unknown or not self.attributions:
            raise ConfigError(
                f"{where}.attributions",
                f"holds {unknown[0]!r}" if unknown else "is empty",
                f"use some of: {', '.join(ATTRIBUTIONS)} (or enabled: false)",
            )
        for name in ("steps", "occlusion_window", "grad_cam_min_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{where}.{name}", "must be at least 1", "give a positive integer"
                )


def merged_interpret(config: Mapping, experiment: str) -> dict:
    """The top-level ``interpret`` section with the experiment's own ``interpret`` keys on top."""
    own = config["experiments"][experiment].get("interpret") or {}
    return {**(config.get("interpret") or {}), **own}


def interpret_settings(section: Mapping | None) -> InterpretSettings:
    """The config's ``interpret`` mapping as settings, with errors naming the key."""
    return spec_from_mapping(InterpretSettings, section, "interpret")


def grad_cam_layer(model: torch.nn.Module, sample: torch.Tensor, min_size: int):
    """``(name, module)`` of the ResNet stage Grad-CAM reads for inputs like ``sample``
    ``(1, C, X, Y, Z)``: the deepest ``layer1``-``layer4`` whose output has at least
    ``min_size`` voxels per axis (``layer1`` when none has); None for a model without a
    ResNet backbone."""
    import torch

    from neuroadapt.models.backbones import ResNetBackbone

    resnets = [m for m in model.modules() if isinstance(m, ResNetBackbone)]
    if not resnets:
        return None
    stages = [(f"layer{k}", getattr(resnets[0].net, f"layer{k}")) for k in range(1, 5)]
    sizes, hooks = {}, []
    for name, stage in stages:
        hooks.append(
            stage.register_forward_hook(
                lambda _m, _i, out, name=name: sizes.__setitem__(name, min(out.shape[2:]))
            )
        )
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for hook in hooks:
            hook.remove()
    usable = [(name, stage) for name, stage in stages if sizes.get(name, 0) >= min_size]
    return usable[-1] if usable else stages[0]


def attribute(
    forward: Callable[[torch.Tensor], torch.Tensor],
    sample: torch.Tensor,
    settings: InterpretSettings,
    layer: tuple[str, torch.nn.Module] | None = None,
) -> dict[str, np.ndarray]:
    """The attributions of ``settings.attributions`` for ``sample`` ``(1, C, X, Y, Z)``:
    name -> float32 ``(X, Y, Z)`` >= 0. ``layer``: Grad-CAM's stage (:func:`grad_cam_layer`);
    without one, Grad-CAM is left out."""
    import torch
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion

    maps = {}
    sample = sample.detach().float()
    channels, spatial = sample.shape[1], tuple(sample.shape[2:])
    if "integrated_gradients" in settings.attributions:
        values = IntegratedGradients(forward).attribute(
            sample,
            baselines=torch.zeros_like(sample),
            n_steps=settings.steps,
            internal_batch_size=settings.steps,
        )
        maps["integrated_gradients"] = values[0].abs().sum(dim=0)
    if "grad_cam" in settings.attributions and layer is not None:
        cam = LayerGradCam(forward, layer[1]).attribute(sample, relu_attributions=True)
        up = LayerAttribution.interpolate(cam, spatial, interpolate_mode="trilinear")
        maps["grad_cam"] = up[0, 0].clamp(min=0)
    if "occlusion" in settings.attributions:
        w = settings.occlusion_window
        with torch.no_grad():
            values = Occlusion(forward).attribute(
                sample,
                sliding_window_shapes=(channels, w, w, w),
                strides=(channels, w, w, w),
                baselines=0.0,
                perturbations_per_eval=settings.batch_size,
            )
        # every channel of a window gets the same drop: one channel is the map
        maps["occlusion"] = values[0, 0].abs()
    return {name: m.detach().cpu().numpy().astype(np.float32) for name, m in maps.items()}
