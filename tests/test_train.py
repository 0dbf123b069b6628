"""Training one method on one fold: outputs, learning, resuming after a kill, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.metrics import safe_auc
from neuroadapt.train import epoch_batches, run_training

EXPERIMENT = {
    "dataset": "toy",
    "inputs": ["fa", "md"],
    "target": "diagnosis",
    "task": "binary",
    "positive_class": "ADHD",
}
BACKBONE = {"name": "resnet10_w025"}
TRAINING = {"epochs": 6, "batch_size": 4, "patience": 10, "seed": 1}
# train 12, validation 4, test 8; classes alternate so every part holds both.
ROLES = ["train"] * 12 + ["validation"] * 4 + ["test"] * 8


def write_toy_cohort(root: Path, roles=ROLES, seed: int = 0) -> dict:
    """FA/MD-like tensors (2, 32, 32, 32) where ADHD subjects carry a bright block in FA."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows, tensors = [], []
    for i, role in enumerate(roles):
        participant = f"sub-{i + 1:02d}"
        adhd = i % 2 == 0
        image = rng.normal(0.3, 0.05, (2, 32, 32, 32))
        if adhd:
            image[0, 10:22, 10:22, 10:22] += 0.5
        path = root / f"{participant}_space-box_desc-famd_tensor.npy"
        np.save(path, image.astype(np.float16))
        tensors.append(str(path))
        rows.append(
            {
                "participant_id": participant,
                "session_id": "n/a",
                "diagnosis": "ADHD" if adhd else "TD",
                "role": role,
            }
        )
    table = pd.DataFrame(rows)
    table.drop(columns="role").to_csv(root / "subjects.tsv", sep="\t", index=False)
    table[["participant_id", "role"]].to_csv(root / "fold-1.tsv", sep="\t", index=False)
    return {
        "subjects_table": str(root / "subjects.tsv"),
        "fold_table": str(root / "fold-1.tsv"),
        "tensors": tensors,
    }


def train_arguments(cohort: dict, out: Path, method: str = "lora", **overrides) -> dict:
    """run_training's arguments for the toy cohort, outputs under ``out``."""
    return {
        "experiment_name": "toy_exp",
        "experiment": EXPERIMENT,
        "method_name": method,
        "method_settings": {"lr_adapters": 1e-3, "lr_head": 1e-3} if method == "lora" else {},
        "training": TRAINING,
        "backbone": BACKBONE,
        "fold": 1,
        **cohort,
        "out_dir": str(out / "run"),
        "resume_path": str(out / "resume.pt"),
        "tensorboard_dir": str(out / "tensorboard"),
        "threads": 1,
        "progress": False,
    } | overrides


def train(cohort: dict, out: Path, method: str = "lora", **overrides) -> dict:
    return run_training(**train_arguments(cohort, out, method, **overrides))


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    return write_toy_cohort(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def finished(toy, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("run")
    return train(toy, out), out


def test_run_writes_predictions_of_the_test_part_for_both_selected_models(finished):
    summary, out = finished
    run = out / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "history.tsv",
        "model-best_acc.pt",
        "model-best_auc.pt",
        "predictions.tsv",
        "run.json",
    ]
    assert not (out / "resume.pt").exists()  # removed once the outputs are in place
    predictions = pd.read_csv(run / "predictions.tsv", sep="\t")
    expected = {f"sub-{i:02d}" for i in range(17, 25)}
    for selection in ("best_acc", "best_auc"):
        chosen = predictions[predictions.selection == selection]
        assert set(chosen.participant_id) == expected and len(chosen) == 8
        assert chosen.probability.between(0, 1).all()
        assert chosen.label.tolist() == [1 - (i % 2) for i in range(16, 24)]
    history = pd.read_csv(run / "history.tsv", sep="\t")
    assert history.epoch.tolist() == list(range(1, 7))
    # Selected epochs: the best validation accuracy / AUC; ties go to the lower validation
    # loss (then to the earlier epoch).
    for selection, column in (("best_acc", "val_accuracy"), ("best_auc", "val_auc")):
        best = history[history[column] == history[column].max()]
        expected_epoch = int(best.epoch[best.val_loss.idxmin()])
        assert summary["selected"][selection]["epoch"] == expected_epoch, selection
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_run_json_says_how_to_reproduce_the_run(finished):
    summary, out = finished
    saved = json.loads((out / "run" / "run.json").read_text())
    assert saved["seed"] == 1 and saved["device"] == "cpu" and saved["fold"] == 1
    assert saved["training"]["epochs"] == 6 and saved["training"]["augment"]["flip_prob"] == 0.5
    assert saved["method_settings"] == {"lr_adapters": 1e-3, "lr_head": 1e-3}
    assert saved["backbone"] == BACKBONE
    assert set(saved["versions"]) >= {"python", "torch", "monai", "peft", "neuroadapt"}
    assert len(saved["code"]["commit"]) in (40, len("unknown"))
    assert saved["samples"] == {"train": 12, "validation": 4, "test": 8}
    parameters = saved["parameters"]
    assert 0 < parameters["trainable"] < parameters["total"]
    assert saved["peak_memory_mib"] > 0 and saved["memory_kind"] == "cpu_max_rss"


def test_selected_model_files_hold_only_what_training_changed(finished):
    summary, out = finished
    saved = torch.load(out / "run" / "model-best_auc.pt", weights_only=True)
    stored = sum(v.numel() for k, v in saved["state"].items() if "running" not in k)
    trainable = summary["parameters"]["trainable"]
    assert trainable <= stored < trainable + 2_000  # + BatchNorm affine-free buffers only
    assert saved["method"] == "lora" and saved["epoch"] == summary["selected"]["best_auc"]["epoch"]


def test_an_adapted_model_learns_the_planted_effect(finished):
    predictions = pd.read_csv(finished[1] / "run" / "predictions.tsv", sep="\t")
    best = predictions[predictions.selection == "best_auc"]
    assert safe_auc(best.label.to_numpy(), best.probability.to_numpy()) >= 0.9


RESUME_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from test_train import train
train(json.loads({cohort!r}), __import__("pathlib").Path({out!r}), training={training!r})
"""


def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(toy, tmp_path):
    training = TRAINING | {"epochs": 8}
    reference = train(toy, tmp_path / "whole", training=training)
    killed = tmp_path / "killed"
    script = RESUME_SCRIPT.format(
        tests=str(Path(__file__).parent), cohort=json.dumps(toy), out=str(killed), training=training
    )
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (killed / "resume.pt").exists():  # the first epoch's checkpoint
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "run").exists()  # nothing half-written
    resumed = train(toy, killed, training=training)
    assert 1 <= resumed["resumed_from_epoch"] < 8
    for name in ("predictions.tsv", "history.tsv"):
        whole = pd.read_csv(tmp_path / "whole" / "run" / name, sep="\t").drop(
            columns="seconds", errors="ignore"
        )
        again = pd.read_csv(killed / "run" / name, sep="\t").drop(
            columns="seconds", errors="ignore"
        )
        pd.testing.assert_frame_equal(whole, again)
    assert resumed["selected"] == reference["selected"]


def test_batches_read_by_worker_processes_train_exactly_as_in_process(toy, finished, tmp_path):
    reference, out = finished
    read_ahead = train(toy, tmp_path, training=TRAINING | {"loader_workers": 2})
    assert read_ahead["selected"] == reference["selected"]
    for name in ("history.tsv", "predictions.tsv"):
        ours = pd.read_csv(tmp_path / "run" / name, sep="\t").drop(
            columns="seconds", errors="ignore"
        )
        theirs = pd.read_csv(out / "run" / name, sep="\t").drop(columns="seconds", errors="ignore")
        pd.testing.assert_frame_equal(ours, theirs)


def test_negative_loader_workers_are_a_config_error(toy, tmp_path):
    with pytest.raises(ConfigError, match="training.loader_workers"):
        train(toy, tmp_path, training=TRAINING | {"loader_workers": -1})


def test_a_resume_file_of_other_settings_is_not_used(toy, tmp_path):
    first = train(toy, tmp_path, training=TRAINING | {"epochs": 2})
    assert first["resumed_from_epoch"] == 0
    # Leave a resume file behind, then change a setting: the run starts from scratch.
    import shutil

    shutil.rmtree(tmp_path / "run")
    torch.save(
        {"fingerprint": "other", "model": {}, "optimizer": {}, "state": {}}, tmp_path / "resume.pt"
    )
    again = train(toy, tmp_path, training=TRAINING | {"epochs": 2, "seed": 2})
    assert again["resumed_from_epoch"] == 0 and again["epochs_run"] == 2


def test_a_training_part_with_one_class_is_a_clear_error(tmp_path):
    roles = ["train", "test"] * 8 + ["validation"] * 8  # the train rows are all ADHD
    cohort = write_toy_cohort(tmp_path / "data", roles)
    with pytest.raises(InputError, match="training part holds only class 1") as error:
        train(cohort, tmp_path)
    assert "fold-1.tsv" in str(error.value) and "fewer folds" in str(error.value)
    assert not (tmp_path / "run").exists()


def test_unknown_methods_and_settings_are_config_errors(toy, tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'lorra'"):
        train(toy, tmp_path, method="lorra")
    with pytest.raises(ConfigError, match=r"method_settings\.lora\.rank.*use one of: .*\br\b"):
        train(toy, tmp_path, method_settings={"rank": 4})


def test_a_string_label_needs_its_positive_class(toy, tmp_path):
    experiment = {k: v for k, v in EXPERIMENT.items() if k != "positive_class"}
    with pytest.raises(ConfigError, match=r"experiments\.toy_exp\.positive_class.*ADHD, TD"):
        train(toy, tmp_path, experiment=experiment)


def test_backbone_weights_with_a_wrong_checksum_or_shape_are_clear_errors(toy, tmp_path):
    from neuroadapt.models import get_backbone
    from neuroadapt.models.backbones import sha256_of

    weights = tmp_path / "resnet18.pt"
    with pytest.warns(UserWarning, match="RANDOM"):
        torch.save(get_backbone("resnet18_w05").net.state_dict(), weights)
    with pytest.raises(InputError, match="SHA-256 checksum mismatch") as error:
        train(toy, tmp_path, backbone=BACKBONE | {"weights": str(weights), "sha256": "0" * 64})
    assert str(weights) in str(error.value)
    good = sha256_of(weights)
    with pytest.raises(InputError, match="does not fit backbone"):
        train(toy, tmp_path, backbone=BACKBONE | {"weights": str(weights), "sha256": good})


def test_a_lone_last_sample_joins_the_previous_batch():
    batches = epoch_batches(9, 4, seed=0)
    assert [len(b) for b in batches] == [4, 5]
    assert sorted(torch.cat(batches).tolist()) == list(range(9))
    assert [b.tolist() for b in epoch_batches(9, 4, 0)] == [b.tolist() for b in batches]


def test_batchnorm_adaptation_never_passes_a_lone_sample():
    """AdaBN over 9 samples in chunks of 4: the ninth joins the second chunk (BatchNorm in
    training mode refuses one sample of 1x1x1), and every sample is seen once."""
    from neuroadapt.train import adapt_batchnorm

    model = torch.nn.Sequential(torch.nn.BatchNorm3d(2))
    data = torch.randn(9, 2, 1, 1, 1)
    seen = []

    def inputs(index):
        seen.append(len(index))
        return data[index]

    adapt_batchnorm(model, inputs, 9, 4)
    assert seen == [4, 5] and model[0].num_batches_tracked == 2
