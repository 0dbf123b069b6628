"""Settings of the train rule (``training`` in the config), kept apart from the training
code so the workflow can check them at start-up without importing torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from neuroadapt.errors import ConfigError
from neuroadapt.spec import spec_from_mapping

__all__ = ["AugmentSettings", "TrainSettings", "merged_training", "training_settings"]


@dataclass(frozen=True)
class TrainSettings:
    """``training`` of the config: epochs at most, batch size, early-stopping patience
    (epochs without a validation-loss improvement of ``min_delta``), seed, AdamW weight
    decay, bf16 autocast on CUDA, and ``adapt_batchnorm``: before the first epoch,
    re-estimate every BatchNorm layer's running statistics on the training part (AdaBN,
    Li et al. 2016; no gradients, no trained weights change)."""

    epochs: int = 50
    batch_size: int = 4
    patience: int = 10
    min_delta: float = 1e-4
    seed: int = 0
    weight_decay: float = 0.01
    bf16: bool = True
    adapt_batchnorm: bool = False

    def check(self, where: str) -> None:
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}", "must be at least 1", "use e.g. 4")


@dataclass(frozen=True)
class AugmentSettings:
    """``training.augment``: MONAI random transforms applied to training samples only.
    Flip along the left-right axis, Gaussian noise (std in normalised intensity units),
    intensity scaling by a factor in [1 - scale, 1 + scale]; each with its probability."""

    flip_prob: float = 0.5
    noise_prob: float = 0.0
    noise_std: float = 0.02
    scale_prob: float = 0.0
    scale: float = 0.1

    def check(self, where: str) -> None:
        for name in ("flip_prob", "noise_prob", "scale_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{where}.{name}", "is a probability", "use a value in [0, 1]")


def training_settings(section: Mapping | None, where: str) -> tuple[TrainSettings, AugmentSettings]:
    """The config's ``training`` mapping as settings, with errors naming the key."""
    section = dict(section or {})
    augment = spec_from_mapping(AugmentSettings, section.pop("augment", None), f"{where}.augment")
    return spec_from_mapping(TrainSettings, section, where), augment


def merged_training(config: Mapping, experiment: str) -> dict:
    """The top-level ``training`` section with the experiment's own ``training`` keys on top
    (``augment`` merged key by key)."""
    base = dict(config.get("training") or {})
    own = dict(config["experiments"][experiment].get("training") or {})
    augment = {**(base.pop("augment", None) or {}), **(own.pop("augment", None) or {})}
    merged = {**base, **own}
    if augment:
        merged["augment"] = augment
    return merged
