"""Diagnostic: does LoRA approach full fine-tuning as its rank grows to the layers' full rank?

When LoRA stays far below full fine-tuning on the same fold, the question is whether the
low rank is what holds it back (then a rank sweep closes the gap as ``r`` grows) or the
frozen parts are (frozen BatchNorm statistics and affine weights, a collapsed frozen
feature space: then even full-rank LoRA stays behind). :func:`rank_sweep` trains LoRA at
each rank, up to the largest full rank of any adapted layer (``min(d_out, d_in k^3)``),
and full fine-tuning, on one fold with one recipe, and tabulates validation and test
scores. The LoRA scaling ``alpha / r`` is held at the recipe's value (alpha grows with r),
so a larger rank adds capacity without shrinking the update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["full_rank", "rank_sweep", "sweep_ranks"]


def full_rank(backbone) -> int:
    """The largest rank any LoRA target layer of ``backbone`` can have: for a Conv3d
    ``min(d_out, d_in k^3)``, for a Linear ``min(d_out, d_in)``."""
    from torch import nn

    from neuroadapt.methods.lora import default_targets

    ranks = []
    for name in default_targets(backbone):
        layer = backbone.get_submodule(name)
        if isinstance(layer, nn.Conv3d):
            ranks.append(
                min(layer.out_channels, layer.in_channels * int(np.prod(layer.kernel_size)))
            )
        else:
            ranks.append(min(layer.out_features, layer.in_features))
    return max(ranks)


def sweep_ranks(maximum: int, start: int = 1, factor: int = 4) -> list[int]:
    """``start, start*factor, ...`` below ``maximum``, then ``maximum`` itself."""
    ranks, r = [], start
    while r < maximum:
        ranks.append(r)
        r *= factor
    return [*ranks, maximum]


def rank_sweep(
    out_dir: str | Path,
    ranks: Sequence[int] | None,
    lora_settings: Mapping,
    full_settings: Mapping,
    training_kwargs: Mapping,
) -> pd.DataFrame:
    """Train LoRA at every rank of ``ranks`` (default :func:`sweep_ranks` up to the
    backbone's :func:`full_rank`) and full fine-tuning with ``training_kwargs`` (the
    keyword arguments of :func:`neuroadapt.train.run_training` but method, settings and
    folders); one row per run: method, r, trainable parameters, best validation loss and
    AUC, test AUC of the best-AUC selection. Runs go to ``out_dir/<method>-r<r>/``."""
    from neuroadapt.metrics import safe_auc
    from neuroadapt.models import get_backbone
    from neuroadapt.train import run_training

    out_dir = Path(out_dir)
    backbone = training_kwargs["backbone"]
    if ranks is None:
        probe = get_backbone(backbone["name"], 2)
        ranks = sweep_ranks(full_rank(probe))
    alpha_per_rank = float(lora_settings.get("lora_alpha", 8)) / float(lora_settings.get("r", 4))
    runs = [("lora", r, {**lora_settings, "r": r, "lora_alpha": alpha_per_rank * r}) for r in ranks]
    runs.append(("full_finetune", None, dict(full_settings)))
    rows = []
    for method, r, settings in runs:
        folder = out_dir / (f"{method}-r{r}" if r else method)
        summary = run_training(
            **training_kwargs,
            method_name=method,
            method_settings=settings,
            out_dir=str(folder),
            resume_path=str(out_dir / ".resume" / f"{folder.name}.pt"),
            tensorboard_dir=None,
        )
        history = pd.read_csv(folder / "history.tsv", sep="\t")
        predictions = pd.read_csv(folder / "predictions.tsv", sep="\t")
        chosen = predictions[predictions.selection == "best_auc"]
        rows.append(
            {
                "method": method,
                "r": r if r else "full",
                "trainable_parameters": summary["parameters"]["trainable"],
                "trainable_percent": summary["parameters"]["percent"],
                "best_val_loss": float(history.val_loss.min()),
                "best_val_auc": float(history.val_auc.max()),
                "test_auc": safe_auc(chosen.label.to_numpy(), chosen.probability.to_numpy()),
                "epochs_run": summary["epochs_run"],
            }
        )
    return pd.DataFrame(rows)
