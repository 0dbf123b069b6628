"""CT pretraining of a demo backbone: boxes, training, and weights the loader accepts."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import make_cohort

from neuroadapt.errors import InputError
from neuroadapt.models import get_backbone
from neuroadapt.models.backbones import sha256_of
from neuroadapt.pretrain import PretrainSettings, ct_boxes, pretrain_backbone

SMALL_CT = {"kind": "ct_pretrain", "n_subjects": 4, "ct_shape": [48, 48, 24]}


@pytest.fixture(scope="module")
def ct_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctp")
    bids, _ = make_cohort(root, SMALL_CT)
    participants = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str)
    participants["session_id"] = "n/a"
    participants["ct"] = [
        str(bids / p / "ct" / f"{p}_ct.nii.gz") for p in participants.participant_id
    ]
    table = root / "subjects.tsv"
    participants.to_csv(table, sep="\t", index=False)
    return table


def test_each_ct_becomes_one_windowed_box(ct_table):
    rows = pd.read_csv(ct_table, sep="\t")
    boxes = ct_boxes(list(rows.ct), PretrainSettings())
    assert boxes.shape == (4, 1, 32, 32, 32)
    assert boxes.min() == 0.0 and boxes.max() == 1.0  # air below, bone above the window
    # centred on the body: mostly tissue in the middle 8^3 (the airway is air), air in corners
    centre = boxes[:, 0, 12:20, 12:20, 12:20]
    assert ((centre > 0).mean(axis=(1, 2, 3)) > 0.7).all() and (boxes[:, 0, 0, 0, 0] == 0).all()


def test_pretrained_weights_load_into_a_two_channel_backbone(ct_table, tmp_path):
    settings = PretrainSettings(epochs=6, batch_size=2)
    weights, sidecar_path = tmp_path / "w.pt", tmp_path / "w.json"
    sidecar = pretrain_backbone(
        str(ct_table), "resnet10_w025", "lesion", settings, str(weights), str(sidecar_path)
    )
    assert json.loads(sidecar_path.read_text()) == sidecar
    assert sidecar["sha256"] == sha256_of(weights) and sidecar["n_scans"] == 4
    losses = [row["loss"] for row in sidecar["history"]]
    assert len(losses) == 6 and losses[-1] < losses[0]
    backbone = get_backbone(
        "resnet10_w025", in_channels=2, weights=str(weights), sha256=sidecar["sha256"]
    )
    assert backbone.net.conv1.weight.shape[1] == 2


def test_a_label_that_is_not_binary_is_a_clear_error(ct_table, tmp_path):
    with pytest.raises(InputError, match="'site' must hold both 0 and 1") as error:
        pretrain_backbone(
            str(ct_table),
            "resnet10_w025",
            "site",
            PretrainSettings(),
            str(tmp_path / "w.pt"),
            str(tmp_path / "w.json"),
        )
    assert str(ct_table) in str(error.value)
    assert not (tmp_path / "w.pt").exists()
