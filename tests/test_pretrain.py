"""CT pretraining of a demo backbone: boxes, training, and weights the loader accepts (a
ResNet classifies lesion present/absent, a UNETR segments the GTV on the CT/PET box)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_cohort

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.models import UNETRBackbone, get_backbone, load_pretrained
from neuroadapt.models.backbones import BACKBONES, sha256_of
from neuroadapt.models.unetr import unetr_tiny
from neuroadapt.petct.resample import CropSettings
from neuroadapt.pretrain import (
    SEGMENTATION_BACKBONES,
    PretrainSettings,
    ct_boxes,
    ct_gtv_boxes,
    pretrain_backbone,
    pretrain_crop_section,
    pretrain_gtv_inputs,
    segmentation_network_for_box,
    train_unetr_segmentation,
)

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
    participants["gtv"] = [  # as ingestion lists it: a mask per CT, all 0 without a lesion
        str(bids / "derivatives" / "gtv" / p / "ct" / f"{p}_space-CT_label-GTV_mask.nii.gz")
        for p in participants.participant_id
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


# --- UNETR: GTV segmentation on the CT/PET box ------------------------------------------

# The CT/PET stage's box at the test's scale: 32^3 voxels of 2.5 mm (80 mm, inside the small
# phantoms' 72 x 72 x 72 mm field) centred on the GTV; unetr_tiny's registered size is 32^3.
TEST_CROP = CropSettings(spacing_mm=2.5, box_voxels=(32, 32, 32), centre="gtv")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_gtv_boxes_centre_on_the_lesion_or_the_body(ct_table):
    rows = pd.read_csv(ct_table, sep="\t")
    images, masks = ct_gtv_boxes(list(rows.ct), list(rows.gtv), TEST_CROP)
    assert images.shape == masks.shape == (4, 1, 32, 32, 32) and images.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}
    lesion = rows.lesion.to_numpy() == 1
    assert (masks[lesion].sum(axis=(1, 2, 3, 4)) > 50).all()
    assert (masks[~lesion] == 0).all()
    # with a lesion: the mask's centre of mass is the box centre (15.5 voxels, nearest
    # neighbour and voxel rounding allow about one voxel)
    for mask in masks[lesion, 0]:
        centre = np.argwhere(mask > 0).mean(axis=0)
        assert np.abs(centre - 15.5).max() < 1.5
    # without one: body-centred as ct_boxes places it (same centre, other spacing)
    body = ct_boxes(list(rows.ct[~lesion]), PretrainSettings(spacing_mm=2.5))
    assert np.allclose(images[~lesion], body, atol=1e-6)
    # a scan without a mask file is a scan without a lesion
    _, none = ct_gtv_boxes(list(rows.ct[~lesion][:1]), [None], TEST_CROP)
    assert (none == 0).all()


def test_unetr_segmentation_pretraining_loads_into_a_fresh_unetr_tiny(ct_table, tmp_path):
    settings = PretrainSettings(batch_size=2, segmentation_epochs=8)
    weights, sidecar_path = tmp_path / "unetr.pt", tmp_path / "unetr.json"
    sidecar = pretrain_backbone(
        str(ct_table),
        "unetr_tiny",
        "lesion",
        settings,
        str(weights),
        str(sidecar_path),
        crop=TEST_CROP,
    )
    assert json.loads(sidecar_path.read_text()) == sidecar
    assert sidecar["task"] == "segmentation" and sidecar["epochs"] == 8
    assert sidecar["img_size"] == [32, 32, 32] and sidecar["crop"]["spacing_mm"] == 2.5
    assert sidecar["n_scans"] == 4 and sidecar["n_scans_with_gtv"] == 2
    assert sidecar["sha256"] == sha256_of(weights)
    losses = [row["loss"] for row in sidecar["history"]]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert 0.0 <= sidecar["initial_training_dice"] <= 1.0
    assert 0.0 <= sidecar["final_training_dice"] <= 1.0
    # a plain state dict of the bare MONAI UNETR, which the checksum-checked loader takes
    state = torch.load(weights, weights_only=True)
    assert all(not key.startswith("net.") for key in state)
    fresh = unetr_tiny()
    assert fresh.img_size == (32, 32, 32)
    assert load_pretrained(fresh, weights, sidecar["sha256"]) == []
    for key, value in state.items():
        assert torch.equal(fresh.net.state_dict()[key], value), key


def test_a_unetr_is_built_for_the_box():
    with pytest.warns(UserWarning, match="NO PRETRAINED WEIGHTS"):
        registered = get_backbone("unetr_tiny")
    model = segmentation_network_for_box("unetr_tiny", (64, 48, 32))
    assert isinstance(model, UNETRBackbone) and model.img_size == (64, 48, 32)
    assert model.num_patches == 4 * 3 * 2
    # everything but the size (hence the number of position embeddings) is unetr_tiny's
    assert {**model.config, "img_size": registered.img_size} == registered.config
    with pytest.raises(ConfigError, match=r"petct.crop.box_voxels.*multiples of 16"):
        segmentation_network_for_box("unetr_tiny", (40, 40, 40))
    with pytest.raises(ConfigError, match="not a UNETR or Swin UNETR"):
        segmentation_network_for_box("resnet10_w025", (32, 32, 32))
    with pytest.raises(ConfigError, match=r"\[32, 32, 32\] is not the \[96, 96, 96\] input"):
        segmentation_network_for_box(
            "unetr_ct", (32, 32, 32)
        )  # a paper size keeps its pretrained grid
    swin = segmentation_network_for_box("swinunetr_tiny", (64, 64, 32))
    assert swin.img_size == (64, 64, 32)


def test_a_box_that_is_not_the_unetr_img_size_is_a_clear_error(ct_table, tmp_path):
    model = unetr_tiny()  # 32^3
    boxes = torch.zeros(2, 1, 48, 48, 48)
    with pytest.raises(ValueError, match=r"\(48, 48, 48\).*img_size \(32, 32, 32\)"):
        train_unetr_segmentation(model, boxes, boxes, PretrainSettings(epochs=1, batch_size=2))
    # weights pretrained on one box do not load into a UNETR of another size
    path = tmp_path / "w48.pt"
    torch.save(segmentation_network_for_box("unetr_tiny", (48, 48, 48)).net.state_dict(), path)
    with pytest.raises(InputError, match="does not fit backbone") as error:
        load_pretrained(unetr_tiny(), path, sha256_of(path))
    assert any("position_embeddings" in line for line in error.value.details)
    # a box UNETR cannot take fails before any CT is read or weights written
    with pytest.raises(ConfigError, match="petct.crop.box_voxels"):
        pretrain_backbone(
            str(ct_table),
            "unetr_tiny",
            "lesion",
            PretrainSettings(),
            str(tmp_path / "w.pt"),
            str(tmp_path / "w.json"),
            crop=CropSettings(box_voxels=(40, 40, 40)),
        )
    assert not (tmp_path / "w.pt").exists()


def test_unetr_pretraining_needs_the_crop_and_the_gtv_column(ct_table, tmp_path):
    arguments = (PretrainSettings(), str(tmp_path / "w.pt"), str(tmp_path / "w.json"))
    with pytest.raises(ConfigError, match="petct.crop"):
        pretrain_backbone(str(ct_table), "unetr_tiny", "lesion", *arguments)
    without = tmp_path / "subjects.tsv"
    pd.read_csv(ct_table, sep="\t").drop(columns="gtv").to_csv(without, sep="\t", index=False)
    with pytest.raises(InputError, match="no 'gtv' column"):
        pretrain_backbone(str(without), "unetr_tiny", "lesion", *arguments, crop=TEST_CROP)


def test_the_rule_reads_masks_and_the_box_for_unetrs_only(ct_table):
    table = pd.read_csv(ct_table, sep="\t")
    assert pretrain_gtv_inputs(table, "unetr_tiny") == list(table.gtv)
    assert pretrain_gtv_inputs(table, "resnet18_w05") == []
    assert pretrain_gtv_inputs(table.drop(columns="gtv"), "unetr_tiny") == []
    config = {"petct": {"crop": {"spacing_mm": 2.0, "box_voxels": [64, 64, 64]}}}
    assert pretrain_crop_section(config, "unetr_ct") == config["petct"]["crop"]
    assert pretrain_crop_section(config, "resnet18_w05") is None


def _build(factory):
    try:
        with torch.device("meta"):  # the network without allocating its weights (fast)
            return factory(in_channels=1)
    except RuntimeError:  # a network whose constructor reads tensor values: build it
        return factory(in_channels=1)


def test_segmentation_backbones_are_the_registered_unetrs_and_swin_unetrs():
    from neuroadapt.models import SwinUNETRBackbone

    kinds = (UNETRBackbone, SwinUNETRBackbone)
    networks = {n for n, f in BACKBONES.items() if isinstance(_build(f), kinds)}
    assert networks == SEGMENTATION_BACKBONES
