"""Second CT segmentation backbone of paper 5: MONAI ``SwinUNETR`` with access to its pieces.

Paper 5 (PEMMA, arXiv 2504.13645) reports PEMMA on UNETR and on Swin UNETR. Swin UNETR's
encoder is a hierarchical Swin transformer (``swinViT``): a 2^3 patch embedding, then four
stages of shifted-window attention blocks, each followed by patch merging (x2 down-sampling,
x2 channels). It returns five feature maps (after the patch embedding and after each stage,
layer-normed per voxel), of ``feature_size * 2^i`` channels at ``img_size / 2^(i+1)``. The
convolutional decoder reads all five, plus ``encoder1``, the full-resolution convolution path
on the raw image (the only part besides the patch embedding that reads the input).

PEMMA needs the pieces separately (an input adapter before ``swinViT``, a second image skip
path, the deepest features for a prognosis head), and MONAI's ``forward`` runs them in one go,
hence ``encode`` / ``skip_encoder`` / ``decode`` here (the test checks that chaining them
equals MONAI's forward).

Sizes:

- ``swinunetr_ct``: the usual Swin UNETR (96^3 input, feature size 48, depths (2, 2, 2, 2),
  heads (3, 6, 12, 24), window 7, instance norm; 62 M parameters). Deepest map 3^3.
- ``swinunetr_tiny``: CPU demo (32^3 input, feature size 12, one block per stage, window 4,
  batch norm). At 32^3 the deepest map is 1x1x1, and instance norm cannot normalise a
  single voxel (torch raises, in eval mode too), hence batch norm; training it with every
  weight free (``ct_only``, ``early_fusion``) then needs batch size >= 2.

MONAI 1.6's ``SwinUNETR`` takes no ``img_size`` (any size divisible by 32 runs); the wrapper
fixes one anyway, so that a volume of another size than the model was trained on is a clear
error and not a silent change of the attention windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import WindowAttention
from torch import nn

from neuroadapt.models.backbones import BackboneOutput, register_backbone
from neuroadapt.models.unetr import check_volume

__all__ = ["SwinUNETRBackbone", "swinunetr_ct", "swinunetr_tiny"]

#: Total down-sampling of Swin UNETR: patch 2 then four patch mergings (2^5).
DOWNSAMPLING = 32


class SwinUNETRBackbone(nn.Module):
    """MONAI ``SwinUNETR``: volume ``(B, in_channels, *img_size)`` -> logits
    ``(B, out_channels, *img_size)``, with its encoder, skip path and decoder callable
    separately.

    The MONAI network lives in ``self.net`` (checkpoints of a bare MONAI ``SwinUNETR`` load
    into it through ``load_pretrained``); ``stem_key`` names the patch-embedding kernel that
    ``load_pretrained`` inflates when a checkpoint has another number of input channels.
    ``feature_dim`` is the channel count of the deepest Swin features (``16 * feature_size``),
    what ``segment_and_pool`` averages for a prognosis head. Every size in ``img_size`` must
    be a positive multiple of 32.
    """

    stem_key = "swinViT.patch_embed.proj.weight"

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        img_size: Sequence[int] = (96, 96, 96),
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        norm_name: str = "instance",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        dropout_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        img_size = tuple(int(s) for s in img_size)
        if len(img_size) != 3 or any(s <= 0 or s % DOWNSAMPLING for s in img_size):
            raise ValueError(
                f"Swin UNETR img_size must be three positive multiples of {DOWNSAMPLING} "
                f"voxels (patch 2 and four 2x patch mergings), got {img_size}"
            )
        if norm_name == "instance" and math.prod(s // DOWNSAMPLING for s in img_size) == 1:
            raise ValueError(
                f"img_size {img_size} leaves a 1x1x1 deepest map, which instance norm cannot "
                "normalise; use a larger img_size or norm_name='batch'"
            )
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "img_size": img_size,
            "feature_size": feature_size,
            "depths": tuple(depths),
            "num_heads": tuple(num_heads),
            "window_size": window_size,
            "norm_name": norm_name,
            "drop_rate": drop_rate,
            "attn_drop_rate": attn_drop_rate,
            "dropout_path_rate": dropout_path_rate,
        }
        self.net = SwinUNETR(
            in_channels=in_channels,
            out_channels=out_channels,
            feature_size=feature_size,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            norm_name=norm_name,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            dropout_path_rate=dropout_path_rate,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.img_size: tuple[int, int, int] = img_size  # type: ignore[assignment]
        self.feature_size = feature_size
        self.feature_dim = 16 * feature_size

    # --- the pieces PEMMA re-wires --------------------------------------------------------

    @property
    def patch_embedding(self) -> nn.Module:
        """Swin patch embedding: conv 2^3 stride 2, ``(B, C, *img_size)`` ->
        ``(B, feature_size, *img_size / 2)`` (no position embeddings)."""
        return self.net.swinViT.patch_embed

    @property
    def skip_encoder(self) -> nn.Module:
        """Swin UNETR's ``encoder1``: the full-resolution image skip path
        ``(B, C, *img_size)`` -> ``(B, feature_size, *img_size)``."""
        return self.net.encoder1

    def lora_targets(self) -> list[str]:
        """Qualified names of the window-attention projections (``qkv`` and ``proj`` Linear
        layers of every Swin block), the layers LoRA/DoRA adapt. Looked up through their
        ``WindowAttention`` parent because other layers are also called ``proj`` (the patch
        embedding's Conv3d)."""
        return [
            f"{name}.{child}"
            for name, module in self.named_modules()
            if isinstance(module, WindowAttention)
            for child in ("qkv", "proj")
        ]

    def check_input(self, x: torch.Tensor, name: str = "input") -> None:
        """``ValueError`` naming the expected shape unless ``x`` is ``(B, C, *img_size)``."""
        check_volume(x, self.in_channels, self.img_size, name)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The Swin encoder's five feature maps of ``x`` ``(B, C, *img_size)``: after the
        patch embedding and after each stage, ``(B, feature_size * 2^i, *img_size / 2^(i+1))``
        for i = 0..4 (layer-normed per voxel when MONAI's ``normalize`` is on)."""
        return self.net.swinViT(x, self.net.normalize)

    def decode(self, hidden: Sequence[torch.Tensor], skip: torch.Tensor) -> torch.Tensor:
        """Swin UNETR's decoder: the five encoder maps of ``encode`` and the skip features
        ``(B, feature_size, *img_size)`` -> logits ``(B, out_channels, *img_size)``."""
        net = self.net
        enc1 = net.encoder2(hidden[0])
        enc2 = net.encoder3(hidden[1])
        enc3 = net.encoder4(hidden[2])
        dec4 = net.encoder10(hidden[4])
        dec3 = net.decoder5(dec4, hidden[3])
        dec2 = net.decoder4(dec3, enc3)
        dec1 = net.decoder3(dec2, enc2)
        dec0 = net.decoder2(dec1, enc1)
        return net.out(net.decoder1(dec0, skip))

    # --- plain use ---------------------------------------------------------------------

    def segment_and_pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, out_channels, *img_size)`` and the spatial mean of the deepest Swin
        features ``(B, feature_dim)`` (what a prognosis head reads) of ``x``."""
        self.check_input(x)
        hidden = self.encode(x)
        return self.decode(hidden, self.skip_encoder(x)), hidden[-1].mean(dim=(2, 3, 4))

    def forward_features(self, x: torch.Tensor) -> BackboneOutput:
        """Pooled deepest features ``(B, feature_dim)`` and the five encoder maps."""
        self.check_input(x)
        hidden = self.encode(x)
        return BackboneOutput(pooled=hidden[-1].mean(dim=(2, 3, 4)), hidden_states=tuple(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits: ``(B, C, *img_size)`` -> ``(B, out_channels, *img_size)``."""
        self.check_input(x)
        return self.net(x)


@register_backbone("swinunetr_ct")
def swinunetr_ct(in_channels: int = 1, out_channels: int = 1, **kwargs: Any) -> SwinUNETRBackbone:
    """Paper 5's Swin UNETR: 96^3 input, feature size 48, depths (2, 2, 2, 2), window 7."""
    return SwinUNETRBackbone(in_channels, out_channels, (96, 96, 96), feature_size=48, **kwargs)


@register_backbone("swinunetr_tiny")
def swinunetr_tiny(
    in_channels: int = 1,
    out_channels: int = 1,
    img_size: Sequence[int] = (32, 32, 32),
    **kwargs: Any,
) -> SwinUNETRBackbone:
    """CPU demo size: feature size 12, one block per stage, window 4, batch norm (instance
    norm fails on the 1x1x1 deepest map of a 32^3 input); 32^3 input unless ``img_size``
    (multiples of 32) says otherwise."""
    options: dict[str, Any] = {
        "feature_size": 12,
        "depths": (1, 1, 1, 1),
        "num_heads": (3, 6, 12, 24),
        "window_size": 4,
        "norm_name": "batch",
        **kwargs,
    }
    return SwinUNETRBackbone(in_channels, out_channels, tuple(img_size), **options)
