"""A 3D ViT encoder (MONAI ``ViT``) with access to its tokens, for papers 2 and 4.

Paper 2 (Brain-Adapter) feeds a frozen M3D 3D ViT: patch 4x16x16 on a 32x256x256 volume,
768-d tokens, 12 layers, 12 heads (M3D-CLIP's vision tower, which is MONAI's ``ViT`` layout).
Paper 4 prepends projected auxiliary tokens to an anchor transformer's input; that needs the
token sequence between the patch embedding and the first block, which MONAI's ``forward``
does not expose, hence ``embed`` / ``forward_tokens`` here.

Pooled features are the mean of the final (normed) tokens, the usual choice for a ViT
without a class token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import ViT
from torch import nn

from neuroadapt.models.backbones import BackboneOutput, register_backbone

__all__ = ["ViTBackbone"]


class ViTBackbone(nn.Module):
    """MONAI ``ViT`` as a feature extractor: ``(B, C, X, Y, Z)`` -> ``(B, hidden_size)``.

    The MONAI network lives in ``self.net`` (checkpoints of a bare MONAI ``ViT`` load into
    it); ``stem_key`` names the patch-embedding kernel that ``load_pretrained`` inflates when
    a checkpoint has another number of input channels. The input's spatial size must equal
    ``img_size`` (learnable position embeddings).
    """

    stem_key = "patch_embedding.patch_embeddings.weight"

    def __init__(
        self,
        in_channels: int,
        img_size: Sequence[int],
        patch_size: Sequence[int],
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "img_size": tuple(img_size),
            "patch_size": tuple(patch_size),
            "hidden_size": hidden_size,
            "mlp_dim": mlp_dim,
            "num_layers": num_layers,
            "num_heads": num_heads,
        }
        self.net = ViT(
            in_channels=in_channels,
            img_size=tuple(img_size),
            patch_size=tuple(patch_size),
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            classification=False,
        )
        self.in_channels = in_channels
        self.feature_dim = hidden_size
        self.num_patches = int(self.net.patch_embedding.n_patches)

    def lora_targets(self) -> list[str]:
        """The layers LoRA-style methods adapt by default: every block's attention
        projections (fused ``qkv`` and ``out_proj``), as LoRA does in transformers."""
        return [
            name
            for name, module in self.named_modules()
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in ("qkv", "out_proj")
        ]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with position embeddings: ``(B, C, X, Y, Z)`` -> ``(B, N, D)``."""
        size = tuple(x.shape[2:])
        if size != self.config["img_size"]:
            # learnable position embeddings fix the token grid: say so instead of a shape error
            raise ValueError(
                f"this ViT takes {self.config['img_size']} volumes, got {size}; resample the "
                "inputs to that size (model_ready.shape in the config) or pick another backbone"
            )
        return self.net.patch_embedding(x)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the transformer blocks and final norm on any token sequence ``(B, N', D)``
        (patch tokens, possibly with extra tokens prepended) -> ``(B, N', D)``."""
        for block in self.net.blocks:
            tokens = block(tokens)
        return self.net.norm(tokens)

    def forward_features(self, x: torch.Tensor) -> BackboneOutput:
        """Pooled features (mean token) and the output tokens of every block."""
        tokens = self.embed(x)
        hidden = []
        for block in self.net.blocks:
            tokens = block(tokens)
            hidden.append(tokens)
        tokens = self.net.norm(tokens)
        return BackboneOutput(pooled=tokens.mean(dim=1), hidden_states=tuple(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` -> pooled features ``(B, hidden_size)``."""
        return self.forward_tokens(self.embed(x)).mean(dim=1)


@register_backbone("vit_m3d")
def vit_m3d(in_channels: int = 1) -> ViTBackbone:
    """Paper 2's vision encoder size (M3D-CLIP): 32x256x256 input, patch 4x16x16, 768-d, 12
    layers, 12 heads (2048 tokens)."""
    return ViTBackbone(in_channels, (32, 256, 256), (4, 16, 16))


@register_backbone("vit_tiny")
def vit_tiny(in_channels: int = 1) -> ViTBackbone:
    """CPU demo size: 32^3 input, patch 8^3 (64 tokens), 96-d, 4 layers, 4 heads."""
    return ViTBackbone(
        in_channels, (32, 32, 32), (8, 8, 8), hidden_size=96, mlp_dim=192, num_layers=4, num_heads=4
    )
