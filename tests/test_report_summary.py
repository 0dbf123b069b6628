"""The report's summary: methods ranked by the primary metric, with comparison and recipe."""

from __future__ import annotations

import numpy as np
import pandas as pd

from neuroadapt.report.summary import recipe, summary_section


def metrics_table() -> pd.DataFrame:
    rows = []
    for method, auc, p in (("probe", 0.60, np.nan), ("lora", 0.90, 0.01), ("full", 0.75, 0.2)):
        for selection, shift in (("best_auc", 0.0), ("best_acc", -0.3)):
            rows.append(
                {
                    "method": method,
                    "selection": selection,
                    "auc": auc + shift,
                    "auc_low": auc + shift - 0.1,
                    "auc_high": auc + shift + 0.05,
                    "delta_auc": auc - 0.6 if method != "probe" else np.nan,
                    "delta_auc_low": auc - 0.7 if method != "probe" else np.nan,
                    "delta_auc_high": auc - 0.5 if method != "probe" else np.nan,
                    "p_value": p,
                    "reference": "probe",
                }
            )
    return pd.DataFrame(rows)


RESOURCES = pd.DataFrame(
    {"method": ["probe", "lora", "full"], "trainable_percent": [0.1, 2.7, 100]}
)


def run(method, fold, tuning=None, settings=None):
    return {"method": method, "fold": fold, "tuning": tuning, "method_settings": settings or {}}


def test_methods_are_ranked_by_the_primary_metric_at_its_selection():
    runs = [
        run("probe", 1, settings={"lr_head": 0.003}),
        run("lora", 2, {"chosen": {"lr_adapters": 0.004, "lr_head": 0.004}}),
        run("lora", 1, {"chosen": {"lr_adapters": 0.001, "lr_head": 0.001}}),
        run("full", 1, settings={"lr_backbone": 1e-4, "lr_head": 1e-3, "x": 2}),
    ]
    section = summary_section("exp", {"task": "binary"}, metrics_table(), RESOURCES, runs)
    assert section["metric"] == "AUC" and section["reference"] == "probe"
    rows = section["rows"]
    assert [r["method"] for r in rows] == ["lora", "full", "probe"]
    assert rows[0]["metric"] == "0.900 [0.80, 0.95]"
    assert rows[0]["delta"] == "+0.300 [+0.20, +0.40]" and rows[0]["significant"]
    assert not rows[1]["significant"] and "delta" not in rows[2]
    assert rows[0]["trainable_percent"] == "2.7"
    assert rows[0]["recipe"] == "fold 1: lr 0.001; fold 2: lr 0.004"
    assert rows[1]["recipe"] == "fixed: lr_backbone 0.0001, lr_head 0.001"


def test_a_recipe_with_separate_rates_and_a_rank_names_each():
    runs = [run("lora", 1, {"chosen": {"lr_adapters": 0.01, "lr_head": 0.002, "r": 8}})]
    assert recipe(runs) == "fold 1: lr_adapters 0.01, lr_head 0.002, r 8"
    runs = [run("lora", 1, {"chosen": {"lr_adapters": 0.002, "lr_head": 0.002, "r": 8}})]
    assert recipe(runs) == "fold 1: lr 0.002, r 8"


def _write_folds(folder, assignments):
    folder.mkdir(parents=True)
    for fold, roles in enumerate(assignments, start=1):
        pd.DataFrame(
            {"participant_id": [f"sub-{i}" for i in range(len(roles))], "role": roles}
        ).to_csv(folder / f"fold-{fold}.tsv", sep="\t", index=False)


def test_fold_tables_list_folds_in_order_and_roles_train_validation_test(tmp_path):
    from neuroadapt.report.html import fold_balance

    # roles interleaved in the file, folds 1..10 (10 must not sort before 2)
    _write_folds(tmp_path / "splits", [["test", "train", "validation", "train"]] * 10)
    subjects = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(4)], "dx": list("abab")})
    rows = fold_balance({"target": "dx"}, tmp_path / "splits", subjects)
    assert [(r["fold"], r["role"]) for r in rows[:4]] == [
        ("1", "train"),
        ("1", "validation"),
        ("1", "test"),
        ("2", "train"),
    ]
    assert rows[-1]["fold"] == "10" and [r["n"] for r in rows[:3]] == [2, 1, 1]


def test_experiments_with_the_same_folds_and_target_are_shown_once(tmp_path):
    from neuroadapt.report.html import fold_assignments, fold_balance, shared_folds

    subjects = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(4)], "dx": list("abab")})
    same = [["train", "train", "test", "test"], ["test", "test", "train", "train"]]
    # the same counts per fold and role, other subjects: not the same folds
    other = [["test", "test", "train", "train"], ["train", "train", "test", "test"]]
    entries = []
    for name, assignment in (("a", same), ("b", same), ("c", other)):
        _write_folds(tmp_path / name, assignment)
        entries.append(
            {
                "name": name,
                "rows": fold_balance({"target": "dx"}, tmp_path / name, subjects),
                "assignments": fold_assignments(tmp_path / name),
            }
        )
    assert [e["name"] for e in shared_folds(entries)] == ["a, b", "c"]


def test_the_methods_paragraph_states_the_shared_recipe_and_its_tuning():
    from conftest import REPO

    from neuroadapt.config import load_config
    from neuroadapt.report.html import methods_paragraph

    config = load_config(REPO / "config" / "config.yaml")
    text = methods_paragraph(config)
    # the demo: one head, AdaBN, trained norms, 2 Sobol trials in [3e-4, 3e-2] for adhd_dti
    assert "Every method of adhd_dti trained the same 128-unit MLP head" in text
    assert "AdaBN" in text and "also trained its BatchNorm scale and shift" in text
    assert "among 2 quasi-random (Sobol) trials" in text and "[0.0003, 0.03]" in text
    config["training"]["train_norms"] = False
    config["experiments"]["adhd_dti"]["training"] = {"tuning": {"enabled": False}}
    text = methods_paragraph(config)
    assert "BatchNorm scale and shift" not in text
    assert "learning rates were fixed per method" in text


def test_the_methods_paragraph_says_when_reports_went_through_the_hashing_stand_in():
    from neuroadapt.report.html import _text_encoder_sentence

    experiment = {"inputs": ["fa", "report_text"], "text_encoder": {"kind": "hashing"}}
    assert "hashing stand-in" in _text_encoder_sentence("ad", experiment)
    assert "no pretrained language model" in _text_encoder_sentence("ad", {"inputs": []})
    real = {"kind": "huggingface", "path": "/models/minilm"}
    sentence = _text_encoder_sentence("ad", {"text_encoder": real})
    assert "/models/minilm" in sentence and "stand-in" not in sentence


def test_the_methods_paragraph_describes_paper_4s_phase_1_where_it_ran():
    from conftest import REPO

    from neuroadapt.config import load_config
    from neuroadapt.report.html import methods_paragraph

    config = load_config(REPO / "config" / "config.yaml")
    text = methods_paragraph(config)
    assert (
        "For ad_multimodal, paper 4's phase 1 fine-tuned one uni-modal model per modality "
        "(image, report_text, clinical, genetics" in text
    )
    assert "late_fusion, feature_concat, anchored_qformer started from those encoders" in text
    config["experiments"]["ad_multimodal"]["methods"] = ["brain_adapter"]  # no phase 2
    assert "phase 1" not in methods_paragraph(config)


def test_experiment_methods_add_the_phase1_models_a_paper4_method_needs():
    from neuroadapt.experiments import experiment_methods, phase1_modalities

    paper4 = {"inputs": ["fa", "md", "clinical", "report_text"], "methods": ["late_fusion"]}
    assert phase1_modalities(paper4) == ["image", "report_text", "clinical"]
    assert experiment_methods(paper4) == [
        "late_fusion",
        "unimodal_image",
        "unimodal_report_text",
        "unimodal_clinical",
    ]
    listed = paper4 | {"methods": ["unimodal_clinical", "anchored_qformer"]}
    assert experiment_methods(listed).count("unimodal_clinical") == 1
    assert experiment_methods(paper4 | {"methods": ["brain_adapter"]}) == ["brain_adapter"]


def test_the_verdict_names_the_methods_that_differ_from_the_reference():
    section = summary_section("exp", {"task": "binary"}, metrics_table(), RESOURCES, [])
    assert section["verdict"] == (
        "Differ from probe at p < 0.05: lora above it (1 of 2 comparisons, not corrected for "
        "their number; these test subjects, the median 95% interval of a method's AUC is 0.15 "
        "wide)."
    )


def test_the_verdict_says_when_the_cohort_cannot_rank_the_methods():
    metrics = metrics_table().assign(n=36)
    metrics.loc[metrics.method == "lora", "p_value"] = 0.3
    section = summary_section("exp", {"task": "binary"}, metrics, RESOURCES, [])
    assert section["verdict"] == (
        "No method differs from probe at p < 0.05: on 36 test subjects the median 95% interval "
        "of a method's AUC is 0.15 wide; this experiment does not rank them."
    )


def test_a_method_significantly_below_the_reference_is_named_as_below():
    metrics = metrics_table().assign(n=36)
    metrics.loc[metrics.method == "full", ["p_value", "delta_auc"]] = [0.01, -0.2]
    section = summary_section("exp", {"task": "binary"}, metrics, RESOURCES, [])
    assert section["verdict"].startswith(
        "Differ from probe at p < 0.05: lora above and full below it (2 of 2 comparisons"
    )
