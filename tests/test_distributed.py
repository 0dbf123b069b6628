"""Data-parallel training (DDP through torchrun's launcher): two CPU processes with gloo
train as one process does, only rank 0 writes, and a failing rank stops the job clearly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import train_arguments, write_toy_cohort

from neuroadapt.distributed import Ranks
from neuroadapt.errors import ConfigError
from neuroadapt.train import epoch_batches, train_job


def arguments(cohort: dict, out, method: str = "lora", **overrides) -> dict:
    return train_arguments(cohort, out, method, **{"threads": 2} | overrides)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    return write_toy_cohort(tmp_path_factory.mktemp("toy"))


def numbers(path) -> np.ndarray:
    table = pd.read_csv(path, sep="\t").drop(columns=["seconds"], errors="ignore")
    return table.select_dtypes("number").to_numpy(dtype=float)


@pytest.mark.parametrize("method", ["lora", "molre"])
def test_two_processes_train_select_and_predict_as_one(toy, tmp_path, method):
    one = train_job(1, **arguments(toy, tmp_path / "one", method))
    log = tmp_path / "two.log"
    two = train_job(2, log_file=str(log), **arguments(toy, tmp_path / "two", method))
    assert one["processes"] == 1 and two["processes"] == 2
    assert two["selected"] == one["selected"]
    for name in ("history.tsv", "predictions.tsv"):
        np.testing.assert_allclose(
            numbers(tmp_path / "two/run" / name), numbers(tmp_path / "one/run" / name), atol=1e-6
        )
    for selection in one["selected"]:
        a = torch.load(tmp_path / f"one/run/model-{selection}.pt", weights_only=True)["state"]
        b = torch.load(tmp_path / f"two/run/model-{selection}.pt", weights_only=True)["state"]
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0)
    # rank 0 wrote every file, once; the others wrote none of their own
    assert json.loads((tmp_path / "two/run/run.json").read_text())["processes"] == 2
    assert not (tmp_path / "two/resume.pt").exists()
    assert len(list((tmp_path / "two/tensorboard").iterdir())) == 1
    assert "rank 0 neuroadapt.distributed: process 0 of 2 on cpu (gloo)" in log.read_text()
    assert "rank 1" not in log.read_text()


def test_a_failing_process_stops_the_job_with_its_error_and_no_output(toy, tmp_path):
    bad = arguments(toy, tmp_path, method_settings={"bogus": 1})
    with pytest.raises(
        RuntimeError,
        match=r"training process \d of 2 failed: ConfigError: .*"
        r"method_settings.lora.bogus.*is not a parameter of method lora",
    ):
        train_job(2, **bad)
    assert not (tmp_path / "run").exists()


def test_a_job_that_asks_for_no_process_is_a_config_error(toy, tmp_path):
    with pytest.raises(ConfigError, match="resources.train.gpu"):
        train_job(0, **arguments(toy, tmp_path))


def test_each_rank_takes_a_contiguous_share_of_a_batch():
    shares = [Ranks(rank, 3).share(8) for rank in range(3)]
    assert [s.tolist() for s in shares] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert Ranks().share(5).tolist() == [0, 1, 2, 3, 4]


def test_a_trailing_batch_too_small_for_two_samples_per_process_joins_the_one_before():
    # 11 samples in batches of 4: the trailing 3 cannot give 2 processes 2 samples each
    assert [len(b) for b in epoch_batches(11, 4, seed=0, processes=2)] == [4, 7]
    assert [len(b) for b in epoch_batches(11, 4, seed=0, processes=1)] == [4, 4, 3]
    assert sorted(torch.cat(epoch_batches(11, 4, seed=0, processes=2)).tolist()) == list(range(11))
