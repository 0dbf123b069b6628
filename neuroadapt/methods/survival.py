"""Training objective of segmentation + prognosis (paper 5): Dice-CE plus the Cox loss.

Paper 5 (PEMMA, arXiv 2504.13645) trains one model to segment the tumour and to predict a
risk score for survival. The segmentation term is MONAI's ``DiceCELoss`` (sigmoid, one
foreground channel); the prognosis term is the Cox proportional-hazards negative log partial
likelihood with Breslow's handling of tied times.

``cox_partial_likelihood_loss`` is written by hand: the survival libraries (scikit-survival,
lifelines) fit Cox models in numpy and offer no differentiable torch loss, and neither MONAI
nor torch has one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.losses import DiceCELoss
from torch import nn

__all__ = ["SegmentationSurvivalLoss", "cox_partial_likelihood_loss"]


def cox_partial_likelihood_loss(
    risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor
) -> torch.Tensor:
    """Mean negative Cox log partial likelihood, Breslow ties.

    ``risk`` ``(B,)`` log-hazards (any real), ``time`` ``(B,)`` follow-up times (any unit;
    only their order matters), ``event`` ``(B,)`` 1/True where the event was observed, 0 where
    censored. With ``R(t) = {j : time_j >= t}`` the risk set::

        loss = -1/n_events * sum_{i: event_i} [ risk_i - log sum_{j in R(time_i)} exp(risk_j) ]

    Breslow: every subject tied at an event time stays in the risk set of each tied event,
    which ``time_j >= time_i`` gives directly. A batch without events carries no information
    on the ordering; it gives a zero loss that keeps the graph (``0 * risk.sum()``).
    O(B^2) memory, fine for the batch sizes of 3D training.
    """
    if risk.dim() != 1 or risk.shape != time.shape or risk.shape != event.shape:
        raise ValueError(
            "risk, time and event must be 1-D tensors of equal length, got shapes "
            f"{tuple(risk.shape)}, {tuple(time.shape)}, {tuple(event.shape)}"
        )
    event = event.to(torch.bool)
    if not bool(event.any()):
        return risk.sum() * 0.0
    time = time.to(risk.dtype)
    at_risk = time.unsqueeze(0) >= time.unsqueeze(1)  # (i, j): j is in the risk set of i
    log_denominator = torch.logsumexp(risk.unsqueeze(0).masked_fill(~at_risk, -torch.inf), dim=1)
    return -(risk - log_denominator)[event].mean()


class SegmentationSurvivalLoss(nn.Module):
    """``DiceCE(segmentation, mask) + weight_survival * Cox(risk, time, event)``.

    ``outputs``: ``"segmentation"`` logits ``(B, 1, X, Y, Z)``, ``"risk"`` ``(B,)``.
    ``targets``: ``"mask"`` ``(B, 1, X, Y, Z)`` or ``(B, X, Y, Z)`` in {0, 1}; ``"time"`` and
    ``"event"`` ``(B,)`` (needed when ``weight_survival > 0``). Dice-CE uses a sigmoid on
    the single foreground channel (BCE-with-logits as its CE part, MONAI's choice for one
    channel).
    """

    def __init__(self, weight_survival: float = 1.0) -> None:
        super().__init__()
        if weight_survival < 0:
            raise ValueError(f"weight_survival must be >= 0, got {weight_survival}")
        self.weight_survival = float(weight_survival)
        self.dice_ce = DiceCELoss(sigmoid=True)

    def forward(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        needed = ["mask"] + (["time", "event"] if self.weight_survival > 0 else [])
        missing = [k for k in needed if k not in targets]
        if missing:
            raise KeyError(
                f"targets lack {missing}; the segmentation + prognosis loss needs 'mask' and, "
                "with weight_survival > 0, 'time' and 'event' (set weight_survival: 0 to "
                "train segmentation alone)"
            )
        logits = outputs["segmentation"]
        mask = targets["mask"]
        if mask.dim() == logits.dim() - 1:
            mask = mask.unsqueeze(1)
        if mask.shape != logits.shape:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not match the segmentation "
                f"{tuple(logits.shape)}"
            )
        loss = self.dice_ce(logits, mask.to(logits.dtype))
        if self.weight_survival > 0:
            cox = cox_partial_likelihood_loss(outputs["risk"], targets["time"], targets["event"])
            loss = loss + self.weight_survival * cox
        return loss
