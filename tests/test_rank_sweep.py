"""The LoRA rank-sweep diagnostic: ranks up to the layers' full rank, one table of runs."""

from __future__ import annotations

import json

import pandas as pd
from test_train import BACKBONE, EXPERIMENT, write_toy_cohort
from torch import nn

from neuroadapt.models import get_backbone
from neuroadapt.rank_sweep import full_rank, rank_sweep, sweep_ranks


def test_full_rank_is_the_largest_rank_of_any_adapted_layer():
    backbone = get_backbone("resnet10_w025", 2)
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv3d)]
    expected = max(min(c.out_channels, c.in_channels * c.kernel_size[0] ** 3) for c in convs)
    assert full_rank(backbone) == expected == 128
    assert sweep_ranks(128) == [1, 4, 16, 64, 128]
    assert sweep_ranks(64) == [1, 4, 16, 64]


def test_the_sweep_trains_lora_at_each_rank_and_full_finetuning(tmp_path):
    cohort = write_toy_cohort(tmp_path / "data")
    table = rank_sweep(
        tmp_path / "sweep",
        [1, 8],
        {"r": 4, "lora_alpha": 8, "lr_adapters": 1e-3, "lr_head": 1e-3},
        {"lr_backbone": 1e-3, "lr_head": 1e-3},
        {
            "experiment_name": "toy",
            "experiment": EXPERIMENT,
            "training": {"epochs": 2, "batch_size": 4, "patience": 5, "seed": 1},
            "backbone": BACKBONE,
            "fold": 1,
            **cohort,
            "progress": False,
        },
    )
    assert list(table.method) == ["lora", "lora", "full_finetune"]
    assert list(table.r) == [1, 8, "full"]
    trainable = list(table.trainable_parameters)
    assert trainable[0] < trainable[1] and table.trainable_percent.iloc[2] == 100
    assert table.test_auc.between(0, 1).all() and table.best_val_loss.gt(0).all()
    for name in ("lora-r1", "lora-r8", "full_finetune"):
        run = pd.read_csv(tmp_path / "sweep" / name / "history.tsv", sep="\t")
        assert len(run) == 2
    # alpha grows with r: the scaling alpha / r stays the recipe's 2
    saved = json.loads((tmp_path / "sweep" / "lora-r8" / "run.json").read_text())
    assert saved["method_settings"]["lora_alpha"] == 16
