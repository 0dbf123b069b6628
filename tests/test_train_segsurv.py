"""Training paper 5's CT/PET methods on a fold: segmentation + survival outputs and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from neuroadapt.errors import InputError
from neuroadapt.metrics import harrell_c
from neuroadapt.tasks import dice_scores
from neuroadapt.train import run_training

torch.set_num_threads(1)

EXPERIMENT = {
    "dataset": "toy_petct",
    "inputs": ["ct", "pet"],
    "target": "gtv",
    "task": "segmentation+survival",
    "survival": {"time": "months", "event": "event"},
}
TRAINING = {"epochs": 3, "batch_size": 2, "patience": 10, "seed": 0, "adapt_batchnorm": True}
ROLES = ["train"] * 8 + ["validation"] * 4 + ["test"] * 4
SIZE = 32


def write_toy_petct(root: Path, roles=ROLES, events=None) -> dict:
    """CT/PET boxes (2, 32, 32, 32) in [0, 1] with a bright PET blob at the GTV; larger
    tumours die earlier (time falls with the blob radius)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(SIZE)] * 3, indexing="ij"))
    rows, tensors, masks = [], [], []
    for i, _ in enumerate(roles):
        participant = f"sub-{i + 1:02d}"
        radius = 3 + i % 5
        centre = rng.integers(10, 22, 3).reshape(3, 1, 1, 1)
        mask = (((grid - centre) ** 2).sum(0) <= radius**2).astype(np.uint8)
        image = rng.normal(0.3, 0.05, (2, SIZE, SIZE, SIZE))
        image[1] += 0.6 * mask
        prefix = root / f"{participant}_space-box"
        np.save(f"{prefix}_desc-ctpet_tensor.npy", image.astype(np.float16))
        Path(f"{prefix}_desc-ctpet_tensor.json").write_text(json.dumps({"SpacingMM": 2.0}))
        np.save(f"{prefix}_label-GTV_mask.npy", mask)
        tensors.append(f"{prefix}_desc-ctpet_tensor.npy")
        masks.append(f"{prefix}_label-GTV_mask.npy")
        event = 1 if events is None else events[i]
        rows.append(
            {
                "participant_id": participant,
                "session_id": "n/a",
                "months": 60.0 - 6 * radius,
                "event": event,
            }
        )
    table = pd.DataFrame(rows)
    table.to_csv(root / "subjects.tsv", sep="\t", index=False)
    pd.DataFrame({"participant_id": table.participant_id, "role": roles}).to_csv(
        root / "fold-1.tsv", sep="\t", index=False
    )
    return {
        "subjects_table": str(root / "subjects.tsv"),
        "fold_table": str(root / "fold-1.tsv"),
        "tensors": tensors,
        "masks": masks,
    }


def train(cohort: dict, out: Path, method: str, **overrides) -> dict:
    arguments = {
        "experiment_name": "toy_hnc",
        "experiment": EXPERIMENT,
        "method_name": method,
        "method_settings": {},
        "training": TRAINING,
        "backbone": {"name": "unetr_tiny"},
        "fold": 1,
        **cohort,
        "out_dir": str(out / "run"),
        "resume_path": str(out / "resume.pt"),
        "tensorboard_dir": None,
        "threads": 1,
        "progress": False,
    } | overrides
    return run_training(**arguments)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    return write_toy_petct(tmp_path_factory.mktemp("petct"))


@pytest.mark.parametrize("method", ["pemma", "ct_only", "early_fusion"])
def test_a_ct_pet_method_trains_and_predicts_masks_risks_and_scores(toy, tmp_path, method):
    summary = train(toy, tmp_path, method)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "history.tsv",
        "model-best_cindex.pt",
        "model-best_dice.pt",
        "predictions.tsv",
        "run.json",
        "segmentations-best_cindex.npz",
        "segmentations-best_dice.npz",
    ]
    history = pd.read_csv(run / "history.tsv", sep="\t")
    assert {"val_loss", "val_dice", "val_cindex"} <= set(history.columns)
    assert history.val_dice.between(0, 1).all() and history.val_cindex.between(0, 1).all()
    predictions = pd.read_csv(run / "predictions.tsv", sep="\t")
    assert list(predictions.columns) == [
        "fold",
        "participant_id",
        "session_id",
        "selection",
        "event",
        "time",
        "risk",
        "dice",
        "hd95_mm",
    ]
    test_ids = [f"sub-{i:02d}" for i in range(13, 17)]
    for selection in ("best_dice", "best_cindex"):
        chosen = predictions[predictions.selection == selection]
        assert chosen.participant_id.tolist() == test_ids
        assert chosen.dice.between(0, 1).all() and np.isfinite(chosen.risk).all()
        masks = np.load(run / f"segmentations-{selection}.npz")
        assert sorted(masks.files) == test_ids
        assert all(masks[k].shape == (SIZE,) * 3 and masks[k].dtype == np.uint8 for k in test_ids)
        # the table's Dice is the Dice of the saved mask against the truth
        truth = np.load(toy["masks"][12])
        saved = torch.from_numpy(masks["sub-13"][None, None].astype(np.float32))
        expected = dice_scores(saved, torch.from_numpy(truth[None, None].astype(np.float32)))
        assert chosen.dice.iloc[0] == pytest.approx(float(expected[0]), abs=1e-6)
    assert set(summary["selected"]) == {"best_dice", "best_cindex"}
    assert summary["parameters"]["trainable"] < summary["parameters"]["total"] or method != "pemma"


def test_harrell_c_orders_risks_against_times():
    events = np.array([1, 1, 0, 1])
    times = np.array([2.0, 5.0, 6.0, 9.0])
    assert harrell_c(events, times, np.array([4.0, 3.0, 2.0, 1.0])) == 1.0
    assert harrell_c(events, times, np.array([1.0, 2.0, 3.0, 4.0])) == 0.0
    assert np.isnan(harrell_c(np.zeros(4), times, np.arange(4.0)))


def test_a_training_part_without_events_is_refused(tmp_path):
    events = [0] * 8 + [1] * 8
    cohort = write_toy_petct(tmp_path / "data", events=events)
    with pytest.raises(InputError, match="the training part has no event") as caught:
        train(cohort, tmp_path, "pemma")
    assert "fold-1.tsv" in str(caught.value)


def test_missing_masks_are_refused(toy, tmp_path):
    with pytest.raises(InputError, match="segmentation needs one mask per row, got 3 for 16"):
        train(toy | {"masks": toy["masks"][:3]}, tmp_path, "pemma")
