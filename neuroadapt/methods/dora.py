"""``dora``: paper 1's set-up with DoRA instead of LoRA.

DoRA (Liu et al., "DoRA: Weight-Decomposed Low-Rank Adaptation", ICML 2024, arXiv
2402.09353) splits each kernel into a magnitude per output channel and a direction, and
adapts the direction with LoRA: ``W' = m * (W + BA) / ||W + BA||_c``. peft's
``use_dora=True`` implements it for ``nn.Conv3d`` and adds ``d_out`` trainable magnitudes per
adapted layer (initialised to ``||W||_c``, so the adapted network starts equal to the
backbone). Everything else (rank 4, frozen backbone, MLP head, learning rates, AdamW, BCE)
is as in ``lora``.
"""

from __future__ import annotations

from neuroadapt.methods.lora import LoRA
from neuroadapt.methods.registry import register_method


@register_method(
    "dora",
    paper="paper 1 (arXiv 2511.06163), with DoRA (Liu et al., arXiv 2402.09353)",
    family="image",
    tasks=("binary", "multilabel"),
    backbones="features",
    tunable={"lr_adapters": 1e-4, "lr_head": 1e-5, "r": 4},
)
class DoRA(LoRA):
    """``LoRA`` with ``use_dora=True``; merging folds the magnitudes in as well."""

    use_dora = True
