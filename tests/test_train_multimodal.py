"""Training papers 2 and 4's methods on a fold: image + report text + clinical table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import write_toy_cohort  # tests/ is on sys.path (rootdir-less import)

from neuroadapt.train import run_training

torch.set_num_threads(1)

EXPERIMENT = {
    "dataset": "toy",
    "inputs": ["fa", "md", "report_text", "clinical"],
    "target": "diagnosis",
    "task": "binary",
    "positive_class": "ADHD",
    "text_encoder": {"kind": "hashing", "dim": 16},
}
TRAINING = {"epochs": 3, "batch_size": 4, "patience": 10, "seed": 1}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    return write_multimodal_toy(tmp_path_factory.mktemp("mm"))


def write_multimodal_toy(root: Path) -> dict:
    """The image toy cohort plus a report (words follow the class) and a clinical score;
    sub-03 has no report and no clinical row (missing modalities), sub-18 (test) no report."""
    cohort = write_toy_cohort(root)
    table = pd.read_csv(cohort["subjects_table"], sep="\t")
    adhd = table.diagnosis.eq("ADHD")
    reports = np.where(adhd, "restless and inattentive", "calm and attentive")
    reports[2] = ""
    reports[17] = ""  # sub-18, a test subject without a report
    pd.DataFrame({"participant_id": table.participant_id, "report": reports}).to_csv(
        root / "reports.tsv", sep="\t", index=False
    )
    clinical = pd.DataFrame({"participant_id": table.participant_id, "score": adhd * 10.0})
    clinical.drop(index=2).to_csv(root / "clinical.tsv", sep="\t", index=False)
    table["report"] = str(root / "reports.tsv")
    table["clinical"] = str(root / "clinical.tsv")
    table.to_csv(cohort["subjects_table"], sep="\t", index=False)
    return cohort


PHASE1 = ("image", "report_text", "clinical")


def train(toy, out_dir, method, settings=None, fold=1, phase1_runs=None) -> dict:
    return run_training(
        experiment_name="toy_mm",
        experiment=EXPERIMENT,
        method_name=method,
        method_settings=settings or {},
        training=TRAINING,
        backbone={"name": "vit_tiny"},
        fold=fold,
        **toy,
        out_dir=str(out_dir),
        resume_path=str(out_dir.parent / f".{out_dir.name}.resume.pt"),
        tensorboard_dir=None,
        threads=1,
        progress=False,
        phase1_runs=phase1_runs,
    )


@pytest.fixture(scope="module")
def phase1(toy, tmp_path_factory) -> list[str]:
    """Paper 4's phase 1 on fold 1: one unimodal_<modality> run per input modality."""
    root = tmp_path_factory.mktemp("phase1")
    runs = []
    for modality in PHASE1:
        out = root / f"unimodal_{modality}"
        train(toy, out, f"unimodal_{modality}", {"lr_encoder": 1e-3, "lr_head": 1e-2})
        runs.append(str(out))
    return runs


def phase1_for(method, phase1):
    from neuroadapt.method_cards import method_cards

    return phase1 if method_cards()[method].uses_phase1 else None


def test_phase1_trains_each_encoder_alone_and_predicts_half_without_its_modality(toy, phase1):
    """A uni-modal model fine-tunes its whole encoder; sub-18 (test, no report) gets 0.5."""
    for run in phase1:
        summary = pd.read_json(f"{run}/run.json", typ="series")
        assert summary.parameters["trainable"] == summary.parameters["total"]
        assert not (Path(run) / "missing_modality.tsv").exists()
    report = pd.read_csv(f"{phase1[1]}/predictions.tsv", sep="\t", dtype={"participant_id": str})
    absent = report[report.participant_id == "sub-18"]
    assert len(absent) == 2 and np.allclose(absent.probability, 0.5)  # both selections
    present = report[report.participant_id != "sub-18"]
    assert not np.allclose(present.probability, 0.5)


@pytest.mark.parametrize("method", ["late_fusion", "feature_concat", "anchored_qformer"])
def test_phase2_starts_from_the_phase1_encoders_and_heads_frozen(toy, phase1, method):
    """Each encoder of a phase-2 method holds its phase-1 model's weights (and stays frozen);
    per-modality heads start as the phase-1 heads; a missing phase-1 model is an error."""
    from neuroadapt.cohort import load_cohort
    from neuroadapt.errors import ConfigError
    from neuroadapt.train import build_method, phase1_states
    from neuroadapt.train_settings import PROTOCOL, training_settings

    cohort = load_cohort(toy["subjects_table"], toy["fold_table"], toy["tensors"], EXPERIMENT, "t")
    states = phase1_states(phase1, fold=1)
    assert sorted(states) == sorted(PHASE1)
    settings = {"num_queries": 2} if method == "anchored_qformer" else {}
    protocol = training_settings(TRAINING, "training")[0]  # the head phase 1 trained with

    def build(given):
        return build_method(
            method,
            {"name": "vit_tiny"},
            cohort.images.shape[1],
            "binary",
            settings,
            0,
            "t",
            image_size=cohort.images.shape[2:],
            extra=cohort.extra,
            protocol={key: getattr(protocol, key) for key in PROTOCOL},
            phase1=given,
        )

    built = build(states)
    encoders = built.model.encoders
    for modality, state in states.items():
        encoder = encoders[modality]
        encoder = encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder
        weights = {k.removeprefix("encoder."): v for k, v in state.items()}
        for name, tensor in encoder.state_dict().items():
            name = name.replace("base_layer.", "")
            if name in weights:
                assert torch.equal(tensor, weights[name]), (modality, name)
        assert not any(p.requires_grad for n, p in encoder.named_parameters() if "lora" not in n)
        if hasattr(built.model, "heads"):
            head = built.model.heads[modality].state_dict()
            for name, tensor in head.items():
                assert torch.equal(tensor, state[f"head.{name}"])
    with pytest.raises(ConfigError, match="phase-1 models, but none was given for clinical"):
        build({m: s for m, s in states.items() if m != "clinical"})
    with pytest.raises(ConfigError, match="phase-1 models, but none was given"):
        build(None)


def test_phase1_of_another_fold_is_refused(phase1):
    from neuroadapt.errors import InputError
    from neuroadapt.train import phase1_states

    with pytest.raises(InputError, match="not a phase-1 model of fold 2"):
        phase1_states(phase1, fold=2)


@pytest.mark.parametrize(
    "method", ["late_fusion", "feature_concat", "brain_adapter", "anchored_qformer"]
)
def test_a_multimodal_method_trains_and_predicts(toy, tmp_path, method, phase1):
    settings = {"num_queries": 2} if method == "anchored_qformer" else {}
    summary = run_training(
        experiment_name="toy_mm",
        experiment=EXPERIMENT,
        method_name=method,
        method_settings=settings,
        training=TRAINING,
        backbone={"name": "vit_tiny"},
        fold=1,
        **toy,
        out_dir=str(tmp_path / "run"),
        resume_path=str(tmp_path / "resume.pt"),
        tensorboard_dir=None,
        threads=1,
        progress=False,
        phase1_runs=phase1_for(method, phase1),
    )
    predictions = pd.read_csv(tmp_path / "run" / "predictions.tsv", sep="\t")
    assert set(predictions.selection) == {"best_acc", "best_auc"}
    assert len(predictions) == 16 and predictions.probability.between(0, 1).all()
    assert 0 < summary["parameters"]["trainable"] < summary["parameters"]["total"]


@pytest.mark.parametrize(
    ("method", "modalities"),
    [
        ("late_fusion", ["image", "report_text", "clinical"]),
        ("brain_adapter", ["report_text", "clinical"]),  # it cannot run without the image
        ("anchored_qformer", ["image", "report_text", "clinical"]),
    ],
)
def test_a_multimodal_run_predicts_again_with_each_modality_removed(
    toy, tmp_path, method, modalities, phase1
):
    from neuroadapt.missing_modality import FRACTIONS

    settings = {"num_queries": 2} if method == "anchored_qformer" else {}
    run_training(
        experiment_name="toy_mm",
        experiment=EXPERIMENT,
        method_name=method,
        method_settings=settings,
        training=TRAINING,
        backbone={"name": "vit_tiny"},
        fold=1,
        **toy,
        out_dir=str(tmp_path / "run"),
        resume_path=str(tmp_path / "resume.pt"),
        tensorboard_dir=None,
        threads=1,
        progress=False,
        phase1_runs=phase1_for(method, phase1),
    )
    predictions = pd.read_csv(tmp_path / "run" / "predictions.tsv", sep="\t")
    missing = pd.read_csv(tmp_path / "run" / "missing_modality.tsv", sep="\t")
    assert list(missing.columns) == [
        "fold",
        "participant_id",
        "session_id",
        "selection",
        "modality",
        "fraction",
        "removed",
        "label",
        "probability",
    ]
    assert sorted(missing.modality.unique()) == sorted(modalities)
    per_test = len(predictions) // 2  # two selections
    assert len(missing) == 2 * len(modalities) * len(FRACTIONS) * per_test
    removed = missing.groupby(["selection", "modality", "fraction"]).removed.sum()
    assert (removed.loc[("best_auc", modalities[0], 1.0)]) >= per_test - 1  # all that can be
    # removed sets are nested: who lost the modality at 25% still lacks it at 50%
    one = missing[(missing.selection == "best_auc") & (missing.modality == modalities[0])]
    quarter = set(one[(one.fraction == 0.25) & one.removed].participant_id)
    half = set(one[(one.fraction == 0.5) & one.removed].participant_id)
    assert quarter and quarter <= half
    # a removed modality changes the prediction of those who lost it, and only theirs
    base = predictions[predictions.selection == "best_auc"].set_index("participant_id")
    full = one[one.fraction == 1.0].set_index("participant_id")
    kept = full[~full.removed]
    assert np.allclose(kept.probability, base.probability.loc[kept.index], atol=1e-6)
    lost = full[full.removed]
    assert not np.allclose(lost.probability, base.probability.loc[lost.index], atol=1e-6)
