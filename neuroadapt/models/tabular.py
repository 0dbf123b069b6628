"""Token encoders for non-image modalities, with the interface of ``ViTBackbone`` (paper 4).

Paper 4 (Joint Adaptation of Uni-modal Foundation Models for Multi-modal Alzheimer's Disease
Diagnosis, ICLR 2026, OpenReview gPTjQxC74G) joins uni-modal foundation models of imaging,
clinical records, text and genetics. Its modality-anchored Q-former (``anchored_qformer``)
cross-attends to an auxiliary model's *tokens* and prepends projected tokens to an anchor
model's input, so every modality needs an encoder that exposes its token sequence the way
``neuroadapt.models.vit.ViTBackbone`` does:

- ``embed(x) -> (B, N, D)``: input tokens before the first transformer block;
- ``forward_tokens(tokens, mask=None) -> (B, N', D)``: the blocks and final norm on any token
  sequence (extra tokens may be prepended);
- ``forward(x, mask=None) -> (B, D)``: pooled features (mean of the output tokens);
- ``feature_dim`` (``D``) and ``lora_targets()`` (attention projections, for peft).

``TabularTokenEncoder`` turns a clinical or genetic vector ``(B, F)`` into ``F`` tokens with
one linear embedding per feature (the FT-Transformer feature tokenizer, Gorishniy et al. 2021:
token_j = x_j w_j + b_j) followed by MONAI ``TransformerBlock`` s. ``SequenceTokenEncoder``
projects precomputed token embeddings of a frozen text encoder ``(B, L, D_text)`` and runs
transformer blocks; it honours a padding mask ``(B, L)`` (``True`` = real token). No position
embedding is added there: the text encoder's outputs are already contextual. ``TabularMLP``
is a plain MLP ``(B, F) -> (B, D)`` for baselines that need pooled features only.

Pooling is the mean of the output tokens (masked mean where a padding mask is given), the
same choice as the ViT, so all encoders pool alike.
"""

from __future__ import annotations

import math

import torch
from monai.networks.blocks import TransformerBlock
from torch import nn

from neuroadapt.models.text import masked_mean

__all__ = ["SequenceTokenEncoder", "TabularMLP", "TabularTokenEncoder"]


def _check_mask(mask: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor | None:
    """A padding mask as bool ``(B, N)``, checked against ``tokens`` ``(B, N, D)``."""
    if mask is None:
        return None
    if mask.shape != tokens.shape[:2]:
        raise ValueError(
            f"padding mask has shape {tuple(mask.shape)}, tokens {tuple(tokens.shape)}"
        )
    mask = mask.bool()
    if not bool(mask.any(dim=1).all()):
        # an all-padding row would make every attention weight -inf (NaN output)
        raise ValueError("a sample has no real token in its padding mask (all False)")
    return mask


class _TokenTransformer(nn.Module):
    """Shared part of the token encoders: MONAI ``TransformerBlock`` s + final ``LayerNorm``."""

    def __init__(
        self, dim: int, layers: int, heads: int, mlp_dim: int | None, dropout: float
    ) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, mlp_dim or 2 * dim, heads, dropout_rate=dropout)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.feature_dim = dim

    def lora_targets(self) -> list[str]:
        """Every block's attention projections (fused ``qkv`` and ``out_proj``), like the ViT."""
        return [
            name
            for name, module in self.named_modules()
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in ("qkv", "out_proj")
        ]

    def forward_tokens(
        self, tokens: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Blocks and final norm on tokens ``(B, N, D)`` (padding ``mask`` ``(B, N)``, ``True``
        = real token, keeps padded keys out of attention) -> ``(B, N, D)``."""
        mask = _check_mask(mask, tokens)
        for block in self.blocks:
            tokens = block(tokens, attn_mask=mask)
        return self.norm(tokens)


class TabularTokenEncoder(_TokenTransformer):
    """Clinical/genetic vector ``(B, F)`` -> ``F`` tokens ``(B, F, dim)`` -> transformer.

    Feature ``j`` becomes ``x_j * weight[j] + bias[j]`` (a per-feature linear embedding, the
    FT-Transformer numerical tokenizer); the bias doubles as the feature's identity, so no
    position embedding is needed. Inputs should be standardised (z-scores) and finite.
    """

    def __init__(
        self,
        num_features: int,
        dim: int = 64,
        layers: int = 2,
        heads: int = 4,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dim, layers, heads, mlp_dim, dropout)
        self.num_features = num_features
        self.num_tokens = num_features
        self.feature_weight = nn.Parameter(torch.empty(num_features, dim))
        self.feature_bias = nn.Parameter(torch.empty(num_features, dim))
        bound = 1.0 / math.sqrt(dim)  # FT-Transformer's tokenizer initialisation
        nn.init.uniform_(self.feature_weight, -bound, bound)
        nn.init.uniform_(self.feature_bias, -bound, bound)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Feature tokens: ``(B, F)`` -> ``(B, F, dim)``."""
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"expected a (batch, {self.num_features}) feature table, got {tuple(x.shape)}"
            )
        return x.unsqueeze(-1) * self.feature_weight + self.feature_bias

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, F)`` -> pooled features ``(B, dim)`` (mean of the output tokens)."""
        return masked_mean(self.forward_tokens(self.embed(x), mask), mask)


class SequenceTokenEncoder(_TokenTransformer):
    """Precomputed token embeddings ``(B, L, input_dim)`` -> ``(B, L, dim)`` -> transformer.

    For the frozen text encoder's report embeddings: a linear projection to ``dim`` then
    transformer blocks. ``mask`` ``(B, L)`` (``True`` = real token) keeps padding out of
    attention and pooling.
    """

    def __init__(
        self,
        input_dim: int,
        dim: int = 64,
        layers: int = 2,
        heads: int = 4,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dim, layers, heads, mlp_dim, dropout)
        self.input_dim = input_dim
        self.proj = nn.Linear(input_dim, dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Projected tokens: ``(B, L, input_dim)`` -> ``(B, L, dim)``."""
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"expected token embeddings (batch, length, {self.input_dim}), got {tuple(x.shape)}"
            )
        return self.proj(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, input_dim)`` -> pooled features ``(B, dim)`` (masked mean)."""
        return masked_mean(self.forward_tokens(self.embed(x), mask), mask)


class TabularMLP(nn.Module):
    """A plain MLP feature extractor ``(B, F)`` -> ``(B, dim)`` (no tokens), for baselines.

    ``layers`` Linear layers (``F -> hidden -> ... -> dim``) with ReLU between them.
    """

    def __init__(self, num_features: int, dim: int = 64, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        sizes = [num_features] + [hidden] * (layers - 1) + [dim]
        modules: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            modules.append(nn.Linear(d_in, d_out))
            if i < layers - 1:
                modules.append(nn.ReLU())
        self.net = nn.Sequential(*modules)
        self.num_features = num_features
        self.feature_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> ``(B, dim)``."""
        return self.net(x)
