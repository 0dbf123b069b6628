"""Attribution maps (Captum), their localisation scores, one run's interpretation, and the
per-experiment table and group maps."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from test_train import BACKBONE, EXPERIMENT, train, write_toy_cohort

from neuroadapt.attribution import (
    ATTRIBUTIONS,
    InterpretSettings,
    attribute,
    grad_cam_layer,
    interpret_settings,
)
from neuroadapt.attribution_summary import attribution_table, group_maps
from neuroadapt.errors import ConfigError
from neuroadapt.interpret import interpret_run
from neuroadapt.localisation import localisation_scores, to_grid
from neuroadapt.models import get_backbone

# --- localisation scores ---------------------------------------------------------------


def _masks(shape=(10, 10, 10)):
    brain = np.zeros(shape, bool)
    brain[1:9, 1:9, 1:9] = True  # 512 voxels
    region = np.zeros(shape, bool)
    region[4:6, 4:6, 4:6] = True  # 8 voxels: 1/64 of the brain
    return brain, region


def test_a_map_spread_evenly_over_the_brain_scores_chance():
    brain, region = _masks()
    scores = localisation_scores(brain.astype(float), region, brain)
    assert scores["region_share"] == pytest.approx(8 / 512)
    assert scores["mass_share"] == pytest.approx(8 / 512)
    assert scores["enrichment"] == pytest.approx(1.0)
    # the region grown by one voxel: a 4^3 cube
    assert scores["hit_chance"] == pytest.approx(64 / 512)


def test_a_map_inside_the_region_is_enriched_and_hits_and_mass_outside_the_brain_counts():
    brain, region = _masks()
    inside = region.astype(float)
    scores = localisation_scores(inside, region, brain)
    assert scores["enrichment"] == pytest.approx(64.0) and scores["hit"] == 1.0
    # as much mass outside the brain as inside the region: half the share
    outside = inside.copy()
    outside[0, 0, :8] = 1.0
    halved = localisation_scores(outside, region, brain)
    assert halved["mass_share"] == pytest.approx(0.5) and halved["enrichment"] == pytest.approx(32)
    # a peak one voxel beside the region still hits (tolerance 1), two voxels away misses
    near = np.zeros(brain.shape)
    near[6, 5, 5] = 1.0
    far = np.zeros(brain.shape)
    far[7, 5, 5] = 1.0
    assert localisation_scores(near, region, brain)["hit"] == 1.0
    assert localisation_scores(far, region, brain)["hit"] == 0.0


def test_undefined_scores_are_nan_and_mismatched_grids_are_refused():
    brain, region = _masks()
    empty = localisation_scores(brain.astype(float), np.zeros_like(region), brain)
    assert all(np.isnan(v) for v in empty.values())
    zero = localisation_scores(np.zeros(brain.shape), region, brain)
    assert np.isnan(zero["enrichment"]) and zero["region_share"] == pytest.approx(8 / 512)
    with pytest.raises(ValueError, match=r"map \(10, 10, 9\), region \(10, 10, 10\)"):
        localisation_scores(np.zeros((10, 10, 9)), region, brain)


def test_to_grid_moves_a_mask_by_world_coordinates():
    mask = np.zeros((8, 8, 8))
    mask[2:4, 2:4, 2:4] = 1
    # the target grid is the source shifted by 2 voxels (2 mm) along x
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    moved = to_grid(mask, np.eye(4), (8, 8, 8), shifted, order=0)
    assert moved[0:2, 2:4, 2:4].all() and moved.sum() == 8


# --- attributions ------------------------------------------------------------------------


class _Linear(torch.nn.Module):
    """score = sum(w * x): every attribution is known in closed form."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def forward(self, x):
        return (x * self.weight).flatten(1).sum(dim=1)


def test_integrated_gradients_and_occlusion_of_a_linear_model_are_exact():
    generator = torch.Generator().manual_seed(0)
    weight = torch.zeros(2, 8, 8, 8)
    weight[0, 2:4, 2:4, 2:4] = 1.0
    weight[1, 4:8, 4:8, 4:8] = -0.5
    x = torch.rand(1, 2, 8, 8, 8, generator=generator)
    model = _Linear(weight).eval()
    settings = InterpretSettings(steps=8, occlusion_window=4, batch_size=3)
    maps = attribute(model, x, settings)
    assert set(maps) == {"integrated_gradients", "occlusion"}  # no layer: no Grad-CAM
    # IG of a linear score from a zero baseline is x * w (summed |.| over channels)
    expected = (x[0] * weight).abs().sum(dim=0).numpy()
    np.testing.assert_allclose(maps["integrated_gradients"], expected, rtol=1e-5, atol=1e-7)
    # occlusion: each 4^3 cube gets |the score it removes|
    contribution = (x[0] * weight).sum(dim=0).numpy()
    cube = np.abs(contribution[4:8, 4:8, 4:8].sum())
    np.testing.assert_allclose(maps["occlusion"][4:8, 4:8, 4:8], cube, rtol=1e-5)
    np.testing.assert_allclose(maps["occlusion"][0:4, 4:8, 0:4], 0.0, atol=1e-7)
    assert all(m.dtype == np.float32 and m.shape == (8, 8, 8) for m in maps.values())


@pytest.mark.parametrize(("size", "stage"), [(32, "layer2"), (64, "layer3"), (128, "layer4")])
def test_grad_cam_reads_the_deepest_resnet_stage_with_a_4_voxel_map(size, stage):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = get_backbone("resnet10_w025", 2).eval()
    name, module = grad_cam_layer(net, torch.zeros(1, 2, size, size, size), min_size=4)
    assert name == stage and module is getattr(net.net, stage)
    assert grad_cam_layer(_Linear(torch.zeros(2, 8, 8, 8)), torch.zeros(1, 2, 8, 8, 8), 4) is None


def test_grad_cam_map_is_upsampled_to_the_input_and_non_negative():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = get_backbone("resnet10_w025", 2).eval()
    head = torch.nn.Linear(net.feature_dim, 1)
    model = torch.nn.Sequential(net, head).eval()
    x = torch.rand(1, 2, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    layer = grad_cam_layer(model, x, 4)
    maps = attribute(
        lambda images: model(images)[:, 0],
        x,
        InterpretSettings(attributions=("grad_cam",)),
        layer,
    )
    assert maps["grad_cam"].shape == (32, 32, 32) and (maps["grad_cam"] >= 0).all()


def test_bad_interpret_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"interpret\.attributions.*'saliency'.*use some of"):
        interpret_settings({"attributions": ["saliency"]})
    with pytest.raises(ConfigError, match=r"interpret\.steps.*at least 1"):
        interpret_settings({"steps": 0})
    with pytest.raises(ConfigError, match=r"interpret\.window"):
        interpret_settings({"window": 4})
    assert interpret_settings(None).attributions == ATTRIBUTIONS


# --- one run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """The toy cohort (ADHD subjects carry a bright FA block), a full fine-tuning run, its
    interpretation with the block as the planted region and a 40^3 reference grid."""
    root = tmp_path_factory.mktemp("interpret")
    cohort = write_toy_cohort(root / "toy")
    train(cohort, root, "full_finetune", method_settings={})
    grid = np.diag([4.0, 4.0, 4.0, 1.0])
    truth = root / "truth"
    truth.mkdir()
    for i, path in enumerate(cohort["tensors"]):
        Path(path.replace(".npy", ".json")).write_text(json.dumps({"Affine": grid.tolist()}))
        block = np.zeros((32, 32, 32), np.uint8)
        if i % 2 == 0:  # ADHD: the bright block
            block[10:22, 10:22, 10:22] = 1
        nib.save(
            nib.Nifti1Image(block, grid), truth / f"sub-{i + 1:02d}_planted-diagnosis_mask.nii.gz"
        )
    reference = root / "reference.nii.gz"
    nib.save(
        nib.Nifti1Image(np.zeros((40, 40, 40), np.float32), np.diag([3.2, 3.2, 3.2, 1])), reference
    )
    out = root / "attribution" / "full_finetune" / "fold-1"
    table = interpret_run(
        experiment=EXPERIMENT,
        method_name="full_finetune",
        backbone=BACKBONE,
        fold=1,
        run_dir=str(root / "run"),
        out_dir=str(out),
        settings={"steps": 8, "occlusion_window": 8},
        truth_dir=str(truth),
        source_maps=[str(reference)] * len(cohort["tensors"]),
        **cohort,
    )
    return table, out


def test_interpretation_scores_the_test_subjects_that_carry_the_effect(interpreted):
    table, out = interpreted
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("sub-")) == [
        "group_maps.npz",
        "interpret.json",
        "scores.tsv",
    ]
    # test part: sub-17..24; ADHD (the block) are the odd-numbered ones
    assert len(table) == 8 * 3 and set(table.attribution) == set(ATTRIBUTIONS)
    scored = table.dropna(subset=["enrichment"])
    assert sorted(scored.participant_id.unique()) == ["sub-17", "sub-19", "sub-21", "sub-23"]
    assert scored.label.eq(1).all()
    # the tensors hold noise everywhere: the brain is the whole box, the block 12^3 of 32^3
    assert scored.region_share.to_numpy() == pytest.approx((12 / 32) ** 3)
    assert table.loc[table.attribution == "grad_cam", "layer"].eq("layer2").all()
    info = json.loads((out / "interpret.json").read_text())
    assert info["selection"] == "best_auc" and info["test_samples"] == 8
    native = nib.load(
        out / "sub-17_space-dwi_target-diagnosis_desc-integratedgradients_attribution.nii.gz"
    )
    assert native.shape == (40, 40, 40) and np.asarray(native.dataobj).max() > 0
    with np.load(out / "group_maps.npz") as maps:
        assert float(maps["n/map/diagnosis/occlusion/1"]) == 4
        assert maps["map/diagnosis/occlusion/1"].sum() == pytest.approx(4.0, rel=1e-4)
        assert maps["region/diagnosis"].max() == 4


# --- the experiment's table and maps ---------------------------------------------------------


def _fake_run(folder: Path, fold: int, enrichment: list[float], maps: dict) -> Path:
    folder.mkdir(parents=True)
    rows = [
        {
            "fold": fold,
            "participant_id": f"sub-{fold}{k}",
            "session_id": "n/a",
            "target": "diagnosis",
            "label": 1,
            "attribution": "occlusion",
            "layer": "n/a",
            "mass_share": e * 0.1,
            "region_share": 0.1,
            "enrichment": e,
            "hit": float(e > 2),
            "hit_chance": 0.2,
        }
        for k, e in enumerate(enrichment)
    ]
    pd.DataFrame(rows).to_csv(folder / "scores.tsv", sep="\t", index=False, na_rep="n/a")
    np.savez(folder / "group_maps.npz", **maps)
    (folder / "interpret.json").write_text(json.dumps({"selection": "best_auc"}))
    return folder


def test_the_table_pools_folds_and_says_which_methods_beat_chance_and_meet_the_goal(tmp_path):
    one, two = np.zeros((2, 2, 2), np.float32), np.zeros((2, 2, 2), np.float32)
    one[0] = 1.0  # sum over 2 samples
    two[1] = 3.0  # sum over 1 sample
    runs = {
        "lora": [
            _fake_run(
                tmp_path / "a1",
                1,
                [2.0, 4.0],
                {"map/diagnosis/occlusion/1": one, "n/map/diagnosis/occlusion/1": np.array(2)},
            ),
            _fake_run(
                tmp_path / "a2",
                2,
                [6.0],
                {"map/diagnosis/occlusion/1": two, "n/map/diagnosis/occlusion/1": np.array(1)},
            ),
        ]
    }
    metrics = tmp_path / "metrics.tsv"
    pd.DataFrame(
        [
            {
                "method": "lora",
                "selection": "best_acc",
                "auc": 0.5,
                "auc_low": 0.3,
                "auc_high": 0.7,
            },
            {
                "method": "lora",
                "selection": "best_auc",
                "auc": 0.8,
                "auc_low": 0.6,
                "auc_high": 0.9,
            },
        ]
    ).to_csv(metrics, sep="\t", index=False)
    table = attribution_table(runs, metrics, "binary")
    assert table.fold.tolist() == ["1", "2", "pooled"]
    pooled = table.iloc[-1]
    assert pooled.n == 3 and pooled.enrichment == pytest.approx(4.0)
    assert pooled.hit_rate == pytest.approx(2 / 3) and pooled.score_value == 0.8
    assert pooled.beats_chance and pooled.enriched_3x
    assert table.iloc[0].enrichment == pytest.approx(3.0) and table.iloc[0].n == 2
    maps = group_maps(runs)
    # (sum of fold 1 + sum of fold 2) / 3 samples
    np.testing.assert_allclose(maps["lora/diagnosis/occlusion/1"][0], 1 / 3)
    np.testing.assert_allclose(maps["lora/diagnosis/occlusion/1"][1], 1.0)


# --- other tasks ------------------------------------------------------------------------------


def test_a_multilabel_run_explains_every_label_without_ground_truth(tmp_path):
    from test_multilabel import EXPERIMENT as MULTILABEL
    from test_multilabel import short_fit

    cohort, _ = short_fit(tmp_path)
    table = interpret_run(
        experiment=MULTILABEL,
        method_name="linear_probe",
        backbone={"name": "resnet10_w025"},
        fold=1,
        run_dir=str(tmp_path / "run"),
        out_dir=str(tmp_path / "out"),
        settings={"attributions": ["integrated_gradients"], "steps": 4},
        **cohort,
    )
    # 4 test subjects x 2 labels, each with its own label; nothing to score against
    assert len(table) == 8 and table.groupby("target").size().to_dict() == {
        "finding_a": 4,
        "finding_b": 4,
    }
    assert table.enrichment.isna().all()
    assert table[table.target == "finding_b"].label.tolist() == [0, 0, 1, 1]
    with np.load(tmp_path / "out" / "group_maps.npz") as maps:
        assert float(maps["n/map/finding_a/integrated_gradients/1"]) == 2
    assert not list((tmp_path / "out").glob("*.nii.gz"))  # no source grid given


@pytest.mark.parametrize("method", ["brain_adapter", "anchored_qformer"])
def test_multimodal_runs_attribute_the_image_through_their_frozen_encoders(method, tmp_path):
    """Non-image inputs stay fixed; the gradient reaches the image through encoders that
    training runs without gradients (anchored_qformer's frozen phase-1 features)."""
    from test_train_multimodal import EXPERIMENT as MULTIMODAL
    from test_train_multimodal import PHASE1, train, write_multimodal_toy

    cohort = write_multimodal_toy(tmp_path / "toy")
    phase1 = []
    if method == "anchored_qformer":
        for modality in PHASE1:
            out = tmp_path / f"unimodal_{modality}"
            train(cohort, out, f"unimodal_{modality}", {"lr_encoder": 1e-3, "lr_head": 1e-2})
            phase1.append(str(out))
    train(cohort, tmp_path / "run", method, phase1_runs=phase1 or None)
    table = interpret_run(
        experiment=MULTIMODAL,
        method_name=method,
        backbone={"name": "vit_tiny"},
        fold=1,
        run_dir=str(tmp_path / "run"),
        out_dir=str(tmp_path / "out"),
        settings={"steps": 4, "occlusion_window": 8},
        phase1_runs=phase1 or None,
        **cohort,
    )
    assert set(table.attribution) == {"integrated_gradients", "occlusion"}  # a ViT: no Grad-CAM
    with np.load(tmp_path / "out" / "group_maps.npz") as maps:
        ig = maps["map/diagnosis/integrated_gradients/1"]
        assert ig.shape == (32, 32, 32) and ig.sum() > 0
