"""Settings of the train rule (``training`` in the config), kept apart from the training
code so the workflow can check them at start-up without importing torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from neuroadapt.errors import ConfigError
from neuroadapt.spec import spec_from_mapping

__all__ = [
    "AugmentSettings",
    "TrainSettings",
    "TuningSettings",
    "merged_training",
    "refuse_protocol_settings",
    "training_settings",
]

#: Settings of ``training`` that every method of an experiment gets alike (never a method's).
PROTOCOL = ("head_hidden", "train_norms")


def refuse_protocol_settings(method: str, method_settings: Mapping | None) -> None:
    """A method's own settings may not set a ``PROTOCOL`` key (checked at start-up and by
    the train job alike)."""
    for key in PROTOCOL:
        if key in (method_settings or {}):
            raise ConfigError(
                f"method_settings.{method}.{key}",
                f"{key} is the same for every method of an experiment, so a comparison does "
                f"not mix {key} with the adaptation method",
                f"set training.{key} (or the experiment's training.{key}) instead",
            )


#: Sub-mappings of ``training`` that an experiment's own ``training`` merges key by key.
NESTED = ("augment", "tuning")


@dataclass(frozen=True)
class TrainSettings:
    """``training`` of the config: epochs at most, batch size, early-stopping patience
    (epochs without a validation-loss improvement of ``min_delta``), seed, AdamW weight
    decay, bf16 autocast on CUDA, ``adapt_batchnorm``: before the first epoch,
    re-estimate every BatchNorm layer's running statistics on the training part (AdaBN,
    Li et al. 2016; no gradients, no trained weights change), and ``head_hidden``: the
    head every method of the experiment puts on its features (paper 1's 2-layer MLP with
    128 hidden units; ``None``: one linear layer), and ``train_norms``: every method that
    adapts a frozen backbone (LoRA, DoRA, MoLRE) also trains its normalisation layers'
    affine weights (:func:`neuroadapt.methods.base.unfreeze_norms`), so that a comparison
    differs only in what each method itself trains. ``PROTOCOL`` names these two: they are
    set per experiment, never per method. ``loader_workers``: processes that read the next
    training batches while the model computes (:class:`neuroadapt.image_stack.BatchReader`;
    pinned memory on CUDA); 0 reads them in the training process."""

    epochs: int = 50
    batch_size: int = 4
    patience: int = 10
    min_delta: float = 1e-4
    seed: int = 0
    weight_decay: float = 0.01
    bf16: bool = True
    adapt_batchnorm: bool = False
    head_hidden: int | None = 128
    train_norms: bool = False
    loader_workers: int = 0

    def check(self, where: str) -> None:
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}", "must be at least 1", "use e.g. 4")
        if self.loader_workers < 0:
            raise ConfigError(
                f"{where}.loader_workers",
                "must be 0 (batches read in the training process) or more",
                "use the train rule's CPUs per GPU minus one",
            )
        if self.head_hidden is not None and self.head_hidden < 1:
            raise ConfigError(
                f"{where}.head_hidden", "must be at least 1", "use 128 (paper 1) or null (linear)"
            )


@dataclass(frozen=True)
class TuningSettings:
    """``training.tuning``: each train job chooses its method's learning rates (and, with
    ``rank``, the LoRA rank of methods that have one) on the validation part of its fold.

    Every method gets the same budget: ``trials`` full trainings (same epochs, early
    stopping, batch size) at settings drawn by Optuna's quasi-Monte Carlo sampler (scrambled
    Sobol, seeded: space-filling with few trials, and independent of earlier trials' scores)
    from log-uniform ranges: ``lr`` for every learning rate of the method (with
    ``shared_lr`` one value for all of them, so a method with two parameter groups is not
    searched more thinly than one with a single group), ``rank`` (integers) for ``r``. The
    trial with the lowest validation loss (the early-stopping criterion) is kept; the test
    part is never seen. ``enabled: false`` trains once with ``method_settings``."""

    enabled: bool = False
    trials: int = 4
    lr: tuple = (1e-4, 1e-2)
    shared_lr: bool = True
    rank: tuple | None = None
    seed: int = 0

    def check(self, where: str) -> None:
        if self.trials < 1:
            raise ConfigError(f"{where}.trials", "must be at least 1", "use e.g. 4")
        for name, kind in (("lr", float), ("rank", int)):
            bounds = getattr(self, name)
            if bounds is None:
                continue
            if (
                len(bounds) != 2
                or not all(isinstance(b, (int, float)) and b > 0 for b in bounds)
                or bounds[0] > bounds[1]
                or (kind is int and not all(float(b).is_integer() for b in bounds))
            ):
                raise ConfigError(
                    f"{where}.{name}",
                    f"must be [low, high] with 0 < low <= high, got {list(bounds)}",
                    "e.g. lr: [0.0001, 0.01] or rank: [2, 16]",
                )


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


def training_settings(
    section: Mapping | None, where: str
) -> tuple[TrainSettings, AugmentSettings, TuningSettings]:
    """The config's ``training`` mapping as settings, with errors naming the key."""
    section = dict(section or {})
    augment = spec_from_mapping(AugmentSettings, section.pop("augment", None), f"{where}.augment")
    tuning = spec_from_mapping(TuningSettings, section.pop("tuning", None), f"{where}.tuning")
    return spec_from_mapping(TrainSettings, section, where), augment, tuning


def merged_training(config: Mapping, experiment: str) -> dict:
    """The top-level ``training`` section with the experiment's own ``training`` keys on top
    (``augment`` and ``tuning`` merged key by key)."""
    base = dict(config.get("training") or {})
    own = dict(config["experiments"][experiment].get("training") or {})
    nested = {key: {**(base.pop(key, None) or {}), **(own.pop(key, None) or {})} for key in NESTED}
    merged = {**base, **own}
    merged.update({key: value for key, value in nested.items() if value})
    return merged
