"""Equal-budget tuning of a method's learning rates (and rank) on a fold's validation part.

What is tuned is what the method's card declares tunable (``register_method(...,
tunable=...)``, :mod:`neuroadapt.method_cards`): each setting named ``lr`` or ``lr_<group>``
is a learning rate, ``r`` a rank. :func:`trial_settings` draws the same number of settings for every
method from :class:`~neuroadapt.train_settings.TuningSettings`' ranges with Optuna's
quasi-Monte Carlo sampler (scrambled Sobol points, seeded: they cover a range evenly with
few trials and do not depend on earlier trials' scores, so trials could run as separate
jobs). The train job keeps the trial of lowest validation loss.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

from neuroadapt.train_settings import TuningSettings

__all__ = ["learning_rate_names", "trial_settings", "tuned_method_settings", "tuned_names"]

#: Optuna's name of the one learning rate that every ``lr*`` setting takes (``shared_lr``).
SHARED_LR = "lr"


def learning_rate_names(method_cls: type) -> list[str]:
    """The method's tunable learning rates (``lr``, ``lr_head``, ...), in card order."""
    return [n for n in method_cls.card.tunable if n == "lr" or n.startswith("lr_")]


def tuned_names(method_cls: type, tuning: TuningSettings) -> list[str]:
    """The keyword arguments of ``method_cls`` that ``tuning`` chooses."""
    names = learning_rate_names(method_cls)
    if tuning.rank is not None and "r" in method_cls.card.tunable:
        names.append("r")
    return names


def trial_settings(method_cls: type, tuning: TuningSettings) -> list[dict]:
    """``tuning.trials`` dicts of keyword arguments for ``method_cls`` (learning rates and,
    with ``tuning.rank``, ``r``), drawn log-uniformly from the configured ranges.

    The draws depend only on the seed and on the search space, so two methods with the same
    space get the same points."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    rates = learning_rate_names(method_cls)
    tune_rank = "r" in tuned_names(method_cls, tuning)
    with warnings.catch_warnings():  # "experimental" since Optuna 3.0, unchanged since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=tuning.seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    low, high = (float(v) for v in tuning.lr)
    settings = []
    for _ in range(tuning.trials):
        trial = study.ask()
        values: dict = {}
        if rates and tuning.shared_lr:
            shared = trial.suggest_float(SHARED_LR, low, high, log=True)
            values = {name: shared for name in rates}
        else:
            values = {name: trial.suggest_float(name, low, high, log=True) for name in rates}
        if tune_rank:
            values["r"] = trial.suggest_int("r", int(tuning.rank[0]), int(tuning.rank[1]), log=True)
        # Told a constant: the QMC sampler ignores scores, and the study only hands out points.
        study.tell(trial, 0.0)
        settings.append(values)
    return settings


def tuned_method_settings(fixed: Mapping | None, trial: Mapping) -> dict:
    """A method's keyword arguments for one trial: the configured ones, tuned ones on top."""
    return {**dict(fixed or {}), **dict(trial)}
