"""Equal-budget tuning: the same trials for every method, chosen on validation, recorded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_train import train, write_toy_cohort

from neuroadapt.errors import ConfigError
from neuroadapt.methods import get_method
from neuroadapt.train_settings import TuningSettings, training_settings
from neuroadapt.tuning import learning_rate_names, trial_settings, tuned_names


def test_learning_rates_and_rank_are_read_from_the_method():
    assert learning_rate_names(get_method("lora")) == ["lr_adapters", "lr_head"]
    assert learning_rate_names(get_method("linear_probe")) == ["lr_head"]
    assert learning_rate_names(get_method("scratch")) == ["lr"]
    with_rank = TuningSettings(enabled=True, rank=(2, 16))
    assert tuned_names(get_method("molre"), with_rank) == ["lr_adapters", "lr_head", "r"]
    assert tuned_names(get_method("full_finetune"), with_rank) == ["lr_backbone", "lr_head"]
    assert "r" not in tuned_names(get_method("lora"), TuningSettings(enabled=True))


def test_every_method_gets_the_same_trials_from_the_same_ranges():
    tuning = TuningSettings(enabled=True, trials=5, lr=(1e-4, 1e-2), seed=3)
    probe = trial_settings(get_method("linear_probe"), tuning)
    lora = trial_settings(get_method("lora"), tuning)
    scratch = trial_settings(get_method("scratch"), tuning)
    assert len(probe) == len(lora) == len(scratch) == 5
    shared = [t["lr_head"] for t in probe]
    # shared_lr: one value for all of a method's learning rates, the same points for all
    assert [t["lr_adapters"] for t in lora] == [t["lr_head"] for t in lora] == shared
    assert [t["lr"] for t in scratch] == shared
    assert all(1e-4 <= v <= 1e-2 for v in shared)
    assert len(set(shared)) == 5
    # space-filling on the log scale: the 5 points spread over most of the two decades
    logs = np.log10(shared)
    assert logs.max() - logs.min() > 1.0
    assert trial_settings(get_method("linear_probe"), tuning) == probe  # seeded


def test_separate_learning_rates_and_ranks_when_asked():
    tuning = TuningSettings(enabled=True, trials=4, shared_lr=False, rank=(2, 16))
    trials = trial_settings(get_method("lora"), tuning)
    assert all(set(t) == {"lr_adapters", "lr_head", "r"} for t in trials)
    assert any(t["lr_adapters"] != t["lr_head"] for t in trials)
    assert all(isinstance(t["r"], int) and 2 <= t["r"] <= 16 for t in trials)


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ({"trials": 0}, r"'training.tuning.trials': must be at least 1"),
        ({"lr": [0.01, 0.001]}, r"'training.tuning.lr': must be \[low, high\]"),
        ({"rank": [2.5, 8]}, r"'training.tuning.rank': must be \[low, high\]"),
        ({"trails": 3}, r"'training.tuning.trails': is not a parameter"),
    ],
)
def test_impossible_tuning_settings_name_the_key(tuning, message):
    with pytest.raises(ConfigError, match=message):
        training_settings({"tuning": tuning}, "training")


def test_a_tuned_run_keeps_the_trial_of_lowest_validation_loss(tmp_path):
    cohort = write_toy_cohort(tmp_path / "data")
    training = {"epochs": 3, "batch_size": 4, "patience": 10, "seed": 1}
    tuning = {"enabled": True, "trials": 3, "lr": [1e-4, 3e-2]}
    summary = train(cohort, tmp_path, "linear_probe", training={**training, "tuning": tuning})
    run = tmp_path / "run"
    table = pd.read_csv(run / "tuning.tsv", sep="\t")
    assert list(table.columns) == ["trial", "lr_head", "val_loss", "epochs_run", "chosen"]
    assert list(table.trial) == [1, 2, 3]
    assert table.chosen.sum() == 1
    chosen = table[table.chosen].iloc[0]
    assert chosen.val_loss == table.val_loss.min()
    saved = json.loads((run / "run.json").read_text())
    assert saved["tuning"]["chosen_trial"] == chosen.trial
    assert saved["tuning"]["chosen"]["lr_head"] == pytest.approx(chosen.lr_head)
    assert summary["tuning"]["trials"] == 3
    # the kept run is the chosen trial's: its history is that trial's
    history = pd.read_csv(run / "history.tsv", sep="\t")
    assert history.val_loss.min() == pytest.approx(chosen.val_loss)
    assert not list(tmp_path.glob("resume*.pt")), "trial resume files are removed"


def test_the_head_is_the_experiments_for_every_method(tmp_path):
    cohort = write_toy_cohort(tmp_path / "data")
    training = {"epochs": 1, "batch_size": 4, "patience": 10, "seed": 1}
    probe = train(cohort, tmp_path / "a", "linear_probe", training=training)
    linear = train(
        cohort, tmp_path / "b", "linear_probe", training={**training, "head_hidden": None}
    )
    features = 128  # resnet10_w025's pooled features
    assert probe["parameters"]["trainable"] == features * 128 + 128 + 128 + 1
    assert linear["parameters"]["trainable"] == features + 1
    with pytest.raises(
        ConfigError, match=r"method_settings.lora.head_hidden.*training.head_hidden"
    ):
        train(
            cohort,
            tmp_path / "c",
            "lora",
            training=training,
            method_settings={"head_hidden": 16},
        )


def test_train_norms_is_the_experiments_for_every_method_that_freezes_a_backbone(tmp_path):
    cohort = write_toy_cohort(tmp_path / "data")
    training = {"epochs": 1, "batch_size": 4, "patience": 10, "seed": 1}
    counts = {
        (method, norms): train(
            cohort,
            tmp_path / f"{method}-{norms}",
            method,
            training={**training, "train_norms": norms},
        )["parameters"]["trainable"]
        for method in ("lora", "linear_probe")
        for norms in (False, True)
    }
    assert counts[("lora", True)] > counts[("lora", False)]
    # a probe stays a probe: nothing of the backbone trains
    assert counts[("linear_probe", True)] == counts[("linear_probe", False)]
    with pytest.raises(
        ConfigError, match=r"method_settings.lora.train_norms.*training.train_norms"
    ):
        train(
            cohort,
            tmp_path / "c",
            "lora",
            training=training,
            method_settings={"train_norms": True},
        )
