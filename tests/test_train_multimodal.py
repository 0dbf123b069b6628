"""Training papers 2 and 4's methods on a fold: image + report text + clinical table."""

from __future__ import annotations

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
    """The image toy cohort plus a report (words follow the class) and a clinical score;
    sub-03 has no report and no clinical row (missing modalities)."""
    root = tmp_path_factory.mktemp("mm")
    cohort = write_toy_cohort(root)
    table = pd.read_csv(cohort["subjects_table"], sep="\t")
    adhd = table.diagnosis.eq("ADHD")
    reports = np.where(adhd, "restless and inattentive", "calm and attentive")
    reports[2] = ""
    pd.DataFrame({"participant_id": table.participant_id, "report": reports}).to_csv(
        root / "reports.tsv", sep="\t", index=False
    )
    clinical = pd.DataFrame({"participant_id": table.participant_id, "score": adhd * 10.0})
    clinical.drop(index=2).to_csv(root / "clinical.tsv", sep="\t", index=False)
    table["report"] = str(root / "reports.tsv")
    table["clinical"] = str(root / "clinical.tsv")
    table.to_csv(cohort["subjects_table"], sep="\t", index=False)
    return cohort


@pytest.mark.parametrize(
    "method", ["late_fusion", "feature_concat", "brain_adapter", "anchored_qformer"]
)
def test_a_multimodal_method_trains_and_predicts(toy, tmp_path, method):
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
    toy, tmp_path, method, modalities
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
