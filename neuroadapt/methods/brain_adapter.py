"""``brain_adapter``: CNN adapter before a frozen 3D ViT, CLIP alignment with reports (paper 2).

Paper 2 (Zhang et al., "Brain-Adapter: Enhancing Neurological Disorder Analysis with
Adapter-Tuning Multimodal Large Language Models", arXiv 2501.16282, Sec. 2): a lightweight
CNN bottleneck with a residual block maps the MRI volume onto the input grid of a frozen
M3D 3D ViT (patch 4x16x16, 32x256x256 here: ``vit_m3d``); a frozen LLaMA2-7B encodes the
clinical report; trainable linear projections map both into one space, where a CLIP
contrastive loss pulls matched image-report pairs together; a classification loss on the
concatenated features trains the diagnosis. Two modes are compared:

- ``mode="trainable_projection"`` (TLP): adapter, projections and head train.
- ``mode="frozen_projection"`` (FPM): the projections (and the logit scale) stay at their
  random initialisation; adapter and head train. The paper's projections have no pretrained
  values either (M3D's ViT and LLaMA-2 come without a shared space), so FPM is this: a
  fixed random map of each modality into the shared space, which CLIP's loss can then only
  align by moving the image features (the adapter); the paper's F1 0.43-0.56 for FPM against
  0.75-0.93 for TLP is what that restriction costs.

The pieces, per sample (image ``(C_in, X, Y, Z)``, report tokens ``(L, D_t)``)::

    e     = resample(encode(x))                strided CNN on the full volume -> ViT grid
    a     = resample(mix(x)) + up(gelu(refine(e)))  residual; ``up`` zero-initialised
    f_img = mean_tokens(ViT(a))                (D_img,)  frozen ViT
    f_txt = masked_mean(report tokens)         (D_t,)    frozen text encoder, pooled
    z_img = P_img f_img,  z_txt = P_txt f_txt  (E,)      linear, no bias (as CLIP)
    logits = head([z_img, z_txt])              classification on the concatenation
    loss  = L_cls + weight_contrastive * L_clip

with ``L_clip`` the symmetric InfoNCE of CLIP over the batch's cosine similarities times
the logit scale ``exp(s)`` (``clip_contrastive_loss``).

Choices where the paper is silent (all configurable):

- The bottleneck (``BottleneckAdapter``): ``encode`` is a CNN of 3^3 convolutions with
  ``adapter_channels`` channels and GELU, one stride-2 stage per halving of an axis down to
  the ViT's grid (the paper's 256^3 MRI onto M3D's 32x256x256: three (2, 1, 1) stages; the
  demo's 48^3 onto vit_tiny's 32^3: one unstrided conv), ``refine`` a 3^3 conv at the grid
  and ``up`` a 1x1x1 conv to the ViT's channels. The paper names a "CNN bottleneck with
  residual block" and gives no sizes; ours adds the residual path ``resample(mix(x))``
  (``mix``: 1x1x1, initialised to the channel mean) and zero-initialises ``up``, so at step
  0 the adapter is a resample + channel average and the frozen ViT sees a plausible image.
  The paper's text says 64x256x256 where M3D's ViT takes 32x256x256; we follow the ViT.
- Resampling (what strides cannot reach, e.g. a 1.5x ratio): area averaging on axes that
  shrink, then trilinear on axes that grow (no weights).
- Text pooling: mean of the valid tokens (``report_text_mask``).
- Logit scale: learnable as in CLIP (initialised to ``1 / temperature``, ``temperature`` =
  0.07, clamped to at most 100), part of the projection group; ``learnable_temperature=False``
  keeps it fixed. FPM freezes it with the projections (the whole alignment space is fixed).
- Head: linear on ``[z_img, z_txt]`` (``head_hidden=None``); an int gives an MLP.
- Missing reports (``report_text_present`` false, an all-padding mask, or no
  ``report_text`` in the batch): the head reads a learnable "missing report" embedding
  ``(E,)`` (zero-initialised, in the head group, so it trains in both modes) in place of
  ``z_txt``, and the contrastive loss uses only the samples with a report.
- In-batch negatives are every other sample, even one with the same diagnosis and an
  identical report (as CLIP does).

Inputs (``MultimodalMethod``): the image modalities named in ``image_keys`` (each
``(B, C_k, X, Y, Z)``, concatenated along channels in that order, e.g. ``("fa", "md")``),
``report_text`` ``(B, L, D_t)`` from ``neuroadapt.models.text``, optional
``report_text_mask`` ``(B, L)`` (True = token; without it every token counts) and
``report_text_present`` ``(B,)``. ``parameter_report`` counts the adapter, the frozen ViT,
projections, logit scale and head; the text encoder is not part of the model (its
embeddings are computed once, outside training).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from neuroadapt.errors import InputError
from neuroadapt.methods.base import MultimodalMethod, Task, classification_loss
from neuroadapt.methods.registry import register_method
from neuroadapt.models.classifier import make_head
from neuroadapt.models.text import masked_mean

__all__ = [
    "MODES",
    "BottleneckAdapter",
    "bottleneck_strides",
    "BrainAdapter",
    "BrainAdapterModel",
    "FusionHead",
    "clip_contrastive_loss",
    "resample_volume",
]

MODES = ("trainable_projection", "frozen_projection")
TEXT = "report_text"
#: The largest logit scale, as CLIP clamps it (a temperature of 0.01).
MAX_LOGIT_SCALE = 100.0
SAVE_FORMAT = "neuroadapt.brain_adapter/1"


def resample_volume(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(B, C, X, Y, Z)`` -> ``(B, C, *size)``: area averaging on axes that shrink (no
    aliasing), then trilinear interpolation on axes that grow. Identity when sizes match."""
    size = tuple(int(s) for s in size)
    source = tuple(x.shape[2:])
    if source == size:
        return x
    shrunk = tuple(min(s, t) for s, t in zip(source, size, strict=True))
    if shrunk != source:
        x = F.adaptive_avg_pool3d(x, shrunk)
    if shrunk != size:
        x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
    return x


def bottleneck_strides(
    in_size: Sequence[int] | None, out_size: Sequence[int]
) -> list[tuple[int, int, int]]:
    """Strides of the adapter's strided convolutions: on each axis, one stride-2 stage per
    halving that still leaves at least the ViT's size (``floor(log2(in / out))``), e.g.
    256^3 -> 32x256x256 (the paper's volume onto M3D's grid): three stages of (2, 1, 1).
    No ``in_size`` or no axis to halve: no strided stage."""
    if in_size is None:
        return []
    halvings = [
        max(0, math.floor(math.log2(i / o))) for i, o in zip(in_size, out_size, strict=True)
    ]
    return [tuple(2 if stage < h else 1 for h in halvings) for stage in range(max(halvings))]


class BottleneckAdapter(nn.Module):
    """The Brain-Adapter: a volume ``(B, in_channels, *in_size)`` -> the ViT's input
    ``(B, out_channels, *out_size)``, learned.

    ``a = resample(mix(x)) + up(gelu(refine(resample(encode(x)))))``:

    - ``encode``: the bottleneck CNN on the full-resolution input: ``kernel_size`` convs to
      ``hidden_channels``, each followed by GELU, strided by :func:`bottleneck_strides` (the
      paper's 256^3 -> 32x256x256: three (2, 1, 1) stages; a volume that needs no halving:
      one unstrided conv). A ratio that is not a power of two is closed by ``resample``
      (area mean / trilinear, no weights), as is every ratio when ``in_size`` is not given.
    - ``refine``: a ``kernel_size`` conv at the ViT grid, GELU; ``up``: 1x1x1 conv to
      ``out_channels``, zero-initialised.
    - the residual path ``resample(mix(x))``: ``mix`` a 1x1x1 conv initialised to the
      channel mean, so at step 0 the frozen ViT sees a plausible image (the resampled mean
      of the input channels) and the learned branch grows from zero.

    Parameters: ``mix`` ``in*out + out``; ``encode`` ``in*hidden*k^3 + hidden`` for the first
    conv and ``hidden^2*k^3 + hidden`` for each further one; ``refine`` ``hidden^2*k^3 +
    hidden``; ``up`` ``hidden*out + out``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        out_size: Sequence[int],
        hidden_channels: int = 8,
        kernel_size: int = 3,
        in_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, hidden_channels) < 1 or kernel_size % 2 == 0:
            raise ValueError(
                "adapter channels must be >= 1 and its kernel size odd; got "
                f"in={in_channels}, out={out_channels}, hidden={hidden_channels}, k={kernel_size}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.out_size = tuple(int(s) for s in out_size)
        self.strides = bottleneck_strides(in_size, self.out_size)
        pad = kernel_size // 2
        self.mix = nn.Conv3d(in_channels, out_channels, 1)
        layers: list[nn.Module] = []
        channels = in_channels
        for stride in self.strides or [(1, 1, 1)]:
            layers += [
                nn.Conv3d(channels, hidden_channels, kernel_size, stride=stride, padding=pad),
                nn.GELU(),
            ]
            channels = hidden_channels
        self.encode = nn.Sequential(*layers)
        self.refine = nn.Conv3d(hidden_channels, hidden_channels, kernel_size, padding=pad)
        self.act = nn.GELU()
        self.up = nn.Conv3d(hidden_channels, out_channels, 1)
        with torch.no_grad():
            self.mix.weight.fill_(1.0 / in_channels)  # every output channel: the input mean
            self.mix.bias.zero_()
            self.up.weight.zero_()
            self.up.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, X, Y, Z)`` -> ``(B, out_channels, *out_size)``."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"the Brain-Adapter takes volumes (B, {self.in_channels}, X, Y, Z), got "
                f"{tuple(x.shape)}; give the method in_channels equal to the number of image "
                "channels (all image_keys together) or fix the inputs"
            )
        # mixing first is cheaper when the input is larger than the ViT grid; both are
        # linear per voxel / per channel, so the order does not change the result
        skip = resample_volume(self.mix(x), self.out_size)
        h = resample_volume(self.encode(x), self.out_size)
        return skip + self.up(self.act(self.refine(h)))


class FusionHead(nn.Module):
    """Classification head on ``[z_img, z_txt]`` ``(B, 2E)`` -> logits ``(B, num_outputs)``,
    with the learnable ``missing_text`` embedding ``(E,)`` used for samples without a report."""

    def __init__(self, embed_dim: int, num_outputs: int, hidden: int | None = None) -> None:
        super().__init__()
        self.missing_text = nn.Parameter(torch.zeros(embed_dim))
        self.classifier = make_head(2 * embed_dim, num_outputs, hidden)

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, present: torch.Tensor
    ) -> torch.Tensor:
        """``image``, ``text`` ``(B, E)``, ``present`` bool ``(B,)`` -> logits."""
        text = torch.where(present.unsqueeze(-1), text, self.missing_text.expand_as(text))
        return self.classifier(torch.cat([image, text], dim=-1))


def clip_contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP (Radford et al. 2021) over the pairs of one batch.

    ``image_embeds``, ``text_embeds`` ``(B, E)`` (L2-normalised here); ``present`` bool
    ``(B,)`` keeps only the samples with a report. With ``S = scale * I T^T`` over the kept
    ``N`` pairs the loss is ``(CE(S, diag) + CE(S^T, diag)) / 2``, each cross-entropy a mean
    over rows. Fewer than two kept pairs: zero (no negatives to contrast), still attached to
    the graph so that ``backward`` works.
    """
    if present is not None:
        image_embeds, text_embeds = image_embeds[present], text_embeds[present]
    n = image_embeds.shape[0]
    if n < 2:
        return (image_embeds.sum() + text_embeds.sum()) * 0.0
    image_embeds = F.normalize(image_embeds, dim=-1)
    text_embeds = F.normalize(text_embeds, dim=-1)
    logits = logit_scale * image_embeds @ text_embeds.t()  # (N, N): image i vs text j
    target = torch.arange(n, device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class BrainAdapterModel(nn.Module):
    """Adapter -> frozen ViT -> image projection; pooled report -> text projection; head.

    ``forward(inputs)`` returns ``logits`` ``(B, num_outputs)``, ``image_embeds`` and
    ``text_embeds`` ``(B, E)`` (L2-normalised; ``text_embeds`` is zero where no report),
    ``text_present`` bool ``(B,)`` and ``logit_scale`` (a scalar, ``exp(s)`` clamped to 100).
    The ViT stays in eval mode even when the model trains (it is frozen).
    """

    def __init__(
        self,
        adapter: BottleneckAdapter,
        vit: nn.Module,
        text_dim: int,
        embed_dim: int,
        num_outputs: int,
        head_hidden: int | None,
        temperature: float,
        image_keys: Sequence[str],
    ) -> None:
        super().__init__()
        self.adapter = adapter
        self.vit = vit
        self.image_projection = nn.Linear(int(vit.feature_dim), embed_dim, bias=False)
        self.text_projection = nn.Linear(text_dim, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.head = FusionHead(embed_dim, num_outputs, head_hidden)
        self.image_keys = tuple(image_keys)
        self.text_dim = text_dim

    def image(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The image modalities concatenated along channels: ``(B, C_in, X, Y, Z)``."""
        missing = [k for k in self.image_keys if k not in inputs]
        if missing:
            raise KeyError(
                f"brain_adapter reads image inputs {list(self.image_keys)}; missing {missing} "
                f"(got {sorted(inputs)}). Set image_keys to the experiment's image inputs"
            )
        volumes = [inputs[k] for k in self.image_keys]
        return volumes[0] if len(volumes) == 1 else torch.cat(volumes, dim=1)

    def text(
        self, inputs: Mapping[str, torch.Tensor], batch: int, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled report features ``(B, D_t)`` and the bool ``present`` ``(B,)``."""
        if TEXT not in inputs:  # no report in the whole batch
            return like.new_zeros(batch, self.text_dim), like.new_zeros(batch, dtype=torch.bool)
        tokens = inputs[TEXT]
        if tokens.dim() != 3 or tokens.shape[0] != batch or tokens.shape[-1] != self.text_dim:
            raise ValueError(
                f"report_text must be token embeddings (B={batch}, L, D={self.text_dim}), got "
                f"{tuple(tokens.shape)}; set the method's text_dim to the text encoder's dim"
            )
        mask = inputs.get(f"{TEXT}_mask")
        present = inputs.get(f"{TEXT}_present")
        present = (
            torch.ones(batch, dtype=torch.bool, device=tokens.device)
            if present is None
            else present.to(device=tokens.device, dtype=torch.bool)
        )
        if mask is not None:
            mask = mask.to(tokens.device).bool()
            present = present & mask.any(dim=1)  # an all-padding report is a missing one
        return masked_mean(tokens, mask), present

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """See the class docstring."""
        image = self.image(inputs)
        features = self.vit(self.adapter(image))  # (B, D_img); gradients reach the adapter
        z_img = self.image_projection(features)
        pooled, present = self.text(inputs, image.shape[0], features)
        z_txt = self.text_projection(pooled) * present.unsqueeze(-1).to(features.dtype)
        logits = self.head(z_img, z_txt, present)
        return {
            "logits": logits,
            "image_embeds": F.normalize(z_img, dim=-1),
            "text_embeds": F.normalize(z_txt, dim=-1),
            "text_present": present,
            "logit_scale": self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE),
        }

    def train(self, mode: bool = True) -> BrainAdapterModel:
        super().train(mode)
        self.vit.eval()  # frozen: no dropout, no statistics updates
        return self


@register_method(
    "brain_adapter",
    paper="paper 2, Brain-Adapter (arXiv 2501.16282)",
    family="multimodal",
    tasks=("binary",),
    backbones="vit",
    needs_inputs=("report_text",),
    tunable={"lr_adapter": 1e-4, "lr_projections": 1e-4, "lr_head": 1e-3},
)
class BrainAdapter(MultimodalMethod):
    """Brain-Adapter (paper 2) on a ViT backbone (``vit_m3d`` for the paper, ``vit_tiny`` on
    CPU); see the module docstring for the architecture, modes and defaults.

    ``backbone`` needs ``feature_dim``, ``in_channels`` and ``config["img_size"]``
    (``ViTBackbone``); it is frozen. ``in_channels`` is the image input's channel count
    (default: the ViT's). Parameter groups: ``adapter`` (``lr_adapter``), ``projections``
    (``lr_projections``; TLP only: both projections and a learnable logit scale) and
    ``head`` (``lr_head``: the head and the missing-report embedding). The paper gives no
    learning rates; the defaults are common AdamW values.
    """

    modalities = ("image", TEXT)
    required_modalities = ("image",)  # the adapter and the ViT read it; a report may be missing

    def __init__(
        self,
        backbone: nn.Module,
        *,
        task: Task = "binary",
        num_classes: int = 2,
        mode: str = "trainable_projection",
        text_dim: int = 64,
        embed_dim: int = 256,
        in_channels: int | None = None,
        image_keys: Sequence[str] = ("image",),
        adapter_channels: int = 8,
        adapter_kernel: int = 3,
        in_size: Sequence[int] | None = None,
        head_hidden: int | None = None,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        weight_contrastive: float = 1.0,
        lr_adapter: float = 1e-4,
        lr_projections: float = 1e-4,
        lr_head: float = 1e-3,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if task not in ("binary", "multiclass", "multilabel"):
            raise ValueError(f"task must be binary, multiclass or multilabel, not {task!r}")
        img_size = getattr(backbone, "config", {}).get("img_size")
        if img_size is None or not hasattr(backbone, "feature_dim"):
            raise TypeError(
                "brain_adapter needs a ViT backbone with a fixed input size (ViTBackbone: "
                "vit_m3d or vit_tiny), not " + type(backbone).__name__
            )
        if isinstance(image_keys, str):
            image_keys = (image_keys,)
        if not 0 < temperature:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.task: Task = task
        self.mode = mode
        self.num_outputs = 1 if task == "binary" else num_classes
        self.weight_contrastive = float(weight_contrastive)
        self.lr_adapter, self.lr_projections, self.lr_head = lr_adapter, lr_projections, lr_head
        self.modalities = (*image_keys, TEXT)
        in_channels = int(backbone.in_channels if in_channels is None else in_channels)
        adapter = BottleneckAdapter(
            in_channels,
            int(backbone.in_channels),
            img_size,
            adapter_channels,
            adapter_kernel,
            in_size,
        )
        self.model = BrainAdapterModel(
            adapter,
            backbone,
            text_dim,
            embed_dim,
            self.num_outputs,
            head_hidden,
            temperature,
            image_keys,
        )
        self._set_trainable(backbone, False)
        train_alignment = mode == "trainable_projection"
        self._set_trainable(self.model.image_projection, train_alignment)
        self._set_trainable(self.model.text_projection, train_alignment)
        self.model.logit_scale.requires_grad_(train_alignment and learnable_temperature)
        self.config: dict[str, Any] = {
            "mode": mode,
            "task": task,
            "num_outputs": self.num_outputs,
            "in_channels": in_channels,
            "image_keys": list(image_keys),
            "text_dim": text_dim,
            "embed_dim": embed_dim,
            "adapter_channels": adapter_channels,
            "adapter_kernel": adapter_kernel,
            "in_size": None if in_size is None else [int(v) for v in in_size],
            "head_hidden": head_hidden,
            "vit": dict(getattr(backbone, "config", {})),
        }
        self.model.train()

    # --- parts -------------------------------------------------------------------------

    @property
    def adapter(self) -> BottleneckAdapter:
        return self.model.adapter

    @property
    def vit(self) -> nn.Module:
        return self.model.vit

    @property
    def head(self) -> FusionHead:
        return self.model.head

    def projection_parameters(self) -> list[nn.Parameter]:
        """The two projections and the logit scale, whether or not they train."""
        m = self.model
        return [*m.image_projection.parameters(), *m.text_projection.parameters(), m.logit_scale]

    def param_groups(self) -> list[dict]:
        groups = [
            {"name": "adapter", "params": list(self.adapter.parameters()), "lr": self.lr_adapter},
            {
                "name": "projections",
                "params": [p for p in self.projection_parameters() if p.requires_grad],
                "lr": self.lr_projections,
            },
            {"name": "head", "params": list(self.head.parameters()), "lr": self.lr_head},
        ]
        return [g for g in groups if g["params"]]  # FPM: no projection group

    # --- loss --------------------------------------------------------------------------

    @staticmethod
    def _label(target: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        return target["label"] if isinstance(target, Mapping) else target

    def loss_terms(
        self, output: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor] | torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``classification``, ``contrastive`` and their weighted sum ``total`` (scalars)."""
        classification = classification_loss(self.task, output["logits"], self._label(target))
        contrastive = clip_contrastive_loss(
            output["image_embeds"],
            output["text_embeds"],
            output["logit_scale"],
            output["text_present"],
        )
        total = classification + self.weight_contrastive * contrastive
        return {"classification": classification, "contrastive": contrastive, "total": total}

    def loss(
        self, output: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor] | torch.Tensor
    ) -> torch.Tensor:
        """Classification loss + ``weight_contrastive`` x CLIP loss of one batch; ``target``
        is the label tensor ``(B,)`` or a mapping with ``"label"``."""
        return self.loss_terms(output, target)["total"]

    # --- saving ------------------------------------------------------------------------

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor outside the frozen ViT: adapter, projections (in FPM too: their
        random values cannot be recomputed), logit scale, head and missing embedding."""
        return {
            k: v.detach().cpu().clone()
            for k, v in self.model.state_dict().items()
            if not k.startswith("vit.")
        }

    def save_adapters(self, directory: str | Path) -> list[Path]:
        """Write ``brain_adapter.pt`` (``adapter_state_dict`` + ``config``) to ``directory``,
        atomically; the frozen ViT is not written. Returns the files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "brain_adapter.pt"
        partial = path.with_name(path.name + ".part")
        state = {"format": SAVE_FORMAT, "config": self.config, "state": self.adapter_state_dict()}
        torch.save(state, partial)
        os.replace(partial, path)
        return [path]

    def load_adapters(self, directory: str | Path) -> None:
        """Load what ``save_adapters`` wrote into this model (same ViT, same settings)."""
        path = Path(directory) / "brain_adapter.pt"
        if not path.is_file():
            raise InputError(path, "Brain-Adapter weights not found", "train the method first")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, Mapping) or saved.get("format") != SAVE_FORMAT:
            raise InputError(path, "not a Brain-Adapter weights file", "use save_adapters")
        if saved["config"] != self.config:
            differ = sorted(
                k
                for k in set(saved["config"]) | set(self.config)
                if saved["config"].get(k) != self.config.get(k)
            )
            raise InputError(
                path,
                f"saved with other settings ({', '.join(differ)} differ)",
                "build the method with the settings it was trained with",
            )
        result = self.model.load_state_dict(saved["state"], strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("vit.")]
        if missing or result.unexpected_keys:
            raise InputError(
                path,
                f"weights do not fit (missing {missing[:5]}, unexpected "
                f"{result.unexpected_keys[:5]})",
                "use the file written by this method's save_adapters",
            )
