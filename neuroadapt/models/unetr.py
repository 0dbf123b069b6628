"""CT segmentation backbone of paper 5: MONAI ``UNETR`` with access to its pieces.

Paper 5 (PEMMA: Efficient Parameter Adaptation for Multi-Modal Medical Image Segmentation
and Prognosis, arXiv 2504.13645) adapts a CT-pretrained UNETR: a ViT encoder (patch 16^3,
12 transformer blocks) whose token sequence is read by a convolutional decoder at blocks 3, 6,
9 and after the final norm, plus an image skip path (UNETR's ``encoder1``) at full resolution.
PEMMA needs these pieces separately (a second patch embedding, a longer token sequence through
the blocks, only some tokens to the decoder, a second skip path), and MONAI's ``forward`` runs
them in one go, hence ``embed`` / ``run_blocks`` / ``decode`` here (the test checks that
chaining them equals MONAI's forward).

Sizes: ``unetr_ct`` is the paper's (96^3 input, feature size 16, hidden 768, 12 heads,
MLP 3072: 216 tokens); ``unetr_tiny`` is a CPU demo (32^3 input: 8 tokens, hidden 48,
4 heads, MLP 96, feature size 8). MONAI fixes UNETR's patch size (16) and depth (12).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import UNETR
from torch import nn

from neuroadapt.models.backbones import BackboneOutput, register_backbone

__all__ = ["UNETRBackbone", "check_volume"]

#: UNETR's fixed patch edge (voxels) and the blocks whose outputs its decoder reads.
PATCH = 16
SKIP_BLOCKS: tuple[int, int, int] = (3, 6, 9)


def check_volume(
    x: torch.Tensor, in_channels: int, img_size: tuple[int, ...], name: str = "input"
) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, *img_size)``.

    UNETR's learnable position embeddings fix the number of tokens, so a volume of another
    size cannot be processed; the message names the expected size and the fix.
    """
    expected = (in_channels, *img_size)
    if x.dim() != 2 + len(img_size) or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"{name}: expected a volume of shape (B, {', '.join(map(str, expected))}) "
            f"(img_size {img_size}), got {tuple(x.shape)}; resample or crop the image to "
            f"{img_size} voxels (e.g. with MONAI's ResizeWithPadOrCrop) before the model"
        )


class UNETRBackbone(nn.Module):
    """MONAI ``UNETR``: volume ``(B, in_channels, *img_size)`` -> logits ``(B, out_channels,
    *img_size)``, with its encoder, skip path and decoder callable separately.

    The MONAI network lives in ``self.net`` (checkpoints of a bare MONAI ``UNETR`` load into
    it through ``load_pretrained``); ``stem_key`` names the patch-embedding kernel that
    ``load_pretrained`` inflates when a checkpoint has another number of input channels.
    ``feature_dim`` is the token width (hidden size). Every spatial size in ``img_size``
    must be a multiple of 16 (UNETR's patch edge).
    """

    stem_key = "vit.patch_embedding.patch_embeddings.weight"

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        img_size: Sequence[int] = (96, 96, 96),
        feature_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        norm_name: str = "instance",
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        img_size = tuple(int(s) for s in img_size)
        if len(img_size) != 3 or any(s <= 0 or s % PATCH for s in img_size):
            raise ValueError(
                f"UNETR img_size must be three positive multiples of {PATCH} voxels "
                f"(its patch edge), got {img_size}"
            )
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "img_size": img_size,
            "feature_size": feature_size,
            "hidden_size": hidden_size,
            "mlp_dim": mlp_dim,
            "num_heads": num_heads,
            "norm_name": norm_name,
            "dropout_rate": dropout_rate,
        }
        self.net = UNETR(
            in_channels=in_channels,
            out_channels=out_channels,
            img_size=img_size,
            feature_size=feature_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_heads=num_heads,
            norm_name=norm_name,
            dropout_rate=dropout_rate,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.img_size: tuple[int, int, int] = img_size  # type: ignore[assignment]
        self.feature_size = feature_size
        self.feature_dim = hidden_size
        self.num_patches = int(self.net.vit.patch_embedding.n_patches)

    # --- the pieces PEMMA re-wires --------------------------------------------------------

    @property
    def patch_embedding(self) -> nn.Module:
        """Patch embedding E^C: conv 16^3 stride 16 + learnable position embeddings."""
        return self.net.vit.patch_embedding

    @property
    def blocks(self) -> nn.ModuleList:
        """The 12 transformer blocks (pre-norm, fused ``attn.qkv`` and ``attn.out_proj``)."""
        return self.net.vit.blocks

    @property
    def skip_encoder(self) -> nn.Module:
        """UNETR's ``encoder1``: the full-resolution image skip path ``(B, C, *img_size)`` ->
        ``(B, feature_size, *img_size)``."""
        return self.net.encoder1

    def lora_targets(self) -> list[str]:
        """Qualified names of every block's attention projections (fused ``qkv`` and
        ``out_proj``), the layers LoRA/DoRA adapt in paper 5."""
        return [
            name
            for name, module in self.named_modules()
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in ("qkv", "out_proj")
        ]

    def check_input(self, x: torch.Tensor, name: str = "input") -> None:
        """``ValueError`` naming the expected shape unless ``x`` is ``(B, C, *img_size)``."""
        check_volume(x, self.in_channels, self.img_size, name)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with position embeddings: ``(B, C, *img_size)`` -> ``(B, N, D)``."""
        return self.patch_embedding(x)

    def run_blocks(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the blocks on any token sequence ``(B, N', D)`` (N' may exceed N, e.g. CT and
        PET tokens concatenated). Returns the final normed tokens ``(B, N', D)`` and each
        block's output (12 tensors ``(B, N', D)``)."""
        hidden = []
        for block in self.blocks:
            tokens = block(tokens)
            hidden.append(tokens)
        return self.net.vit.norm(tokens), hidden

    @property
    def token_skip_encoders(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """UNETR's ``encoder2``-``encoder4``: the skips from blocks 3, 6 and 9's tokens."""
        return (self.net.encoder2, self.net.encoder3, self.net.encoder4)

    def token_skips(
        self, hidden: Sequence[torch.Tensor], encoders: Sequence[nn.Module] | None = None
    ) -> list[torch.Tensor]:
        """The decoder's token skip features from the block outputs ``hidden`` (blocks 3, 6,
        9, each ``(B, num_patches, D)``), through ``encoders`` (default: the network's own
        ``token_skip_encoders``; PEMMA passes its PET copies)."""
        encoders = self.token_skip_encoders if encoders is None else encoders
        return [
            encoder(self.net.proj_feat(hidden[block]))
            for encoder, block in zip(encoders, SKIP_BLOCKS, strict=True)
        ]

    def decode(
        self,
        final: torch.Tensor,
        hidden: Sequence[torch.Tensor],
        skip: torch.Tensor,
        token_skips: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """UNETR's decoder: final tokens ``(B, N, D)``, the 12 block outputs ``(B, N, D)``
        (only blocks 3, 6, 9 are read) and the skip features ``(B, feature_size, *img_size)``
        -> logits ``(B, out_channels, *img_size)``. ``N`` must be ``num_patches``.
        ``token_skips`` (the three features ``token_skips(hidden)`` gives) replace what the
        blocks' outputs would give when passed."""
        net = self.net
        if final.shape[1] != self.num_patches:
            raise ValueError(
                f"decode expects {self.num_patches} tokens (one per patch), got {final.shape[1]}"
            )
        enc2, enc3, enc4 = self.token_skips(hidden) if token_skips is None else token_skips
        dec3 = net.decoder5(net.proj_feat(final), enc4)
        dec2 = net.decoder4(dec3, enc3)
        dec1 = net.decoder3(dec2, enc2)
        return net.out(net.decoder2(dec1, skip))

    # --- plain use ---------------------------------------------------------------------

    def segment_with_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, out_channels, *img_size)`` and the final normed tokens ``(B, N, D)``
        (what a prognosis head pools) of ``x`` ``(B, C, *img_size)``."""
        self.check_input(x)
        final, hidden = self.run_blocks(self.embed(x))
        return self.decode(final, hidden, self.skip_encoder(x)), final

    def segment_and_pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, out_channels, *img_size)`` and the mean final token ``(B, D)`` of
        ``x`` (what a prognosis head reads; same interface as ``SwinUNETRBackbone``)."""
        segmentation, final = self.segment_with_tokens(x)
        return segmentation, final.mean(dim=1)

    def forward_features(self, x: torch.Tensor) -> BackboneOutput:
        """Pooled features (mean final token, ``(B, D)``) and the 12 block outputs."""
        self.check_input(x)
        final, hidden = self.run_blocks(self.embed(x))
        return BackboneOutput(pooled=final.mean(dim=1), hidden_states=tuple(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits: ``(B, C, *img_size)`` -> ``(B, out_channels, *img_size)``."""
        self.check_input(x)
        return self.net(x)


@register_backbone("unetr_ct")
def unetr_ct(in_channels: int = 1, out_channels: int = 1) -> UNETRBackbone:
    """Paper 5's CT UNETR: 96^3 input, feature size 16, hidden 768, 12 heads, MLP 3072."""
    return UNETRBackbone(in_channels, out_channels, (96, 96, 96), feature_size=16)


@register_backbone("unetr_tiny")
def unetr_tiny(
    in_channels: int = 1,
    out_channels: int = 1,
    img_size: Sequence[int] = (32, 32, 32),
    **kwargs: Any,
) -> UNETRBackbone:
    """CPU demo size: feature size 8, hidden 48, 4 heads, MLP 96; 32^3 input (8 tokens) unless
    ``img_size`` (multiples of 16) says otherwise."""
    return UNETRBackbone(
        in_channels,
        out_channels,
        tuple(img_size),
        feature_size=8,
        hidden_size=48,
        mlp_dim=96,
        num_heads=4,
        **kwargs,
    )
