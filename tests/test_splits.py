"""Cohort splitting: properties over random cohorts, strategies, balance, errors, outputs."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.splits import (
    SplitSettings,
    check_no_leakage,
    class_labels,
    make_splits,
    split_experiment,
    subject_table,
)


def cohort(
    n: int, n_classes: int = 2, seed: int = 0, sessions: int = 1, sites: int = 2
) -> pd.DataFrame:
    """A subjects.tsv-like table (strings, as read from disk), one row per session."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        subject = {
            "participant_id": f"sub-{i:05d}",
            "diagnosis": f"class{i % n_classes}",
            "age": f"{rng.uniform(7, 17):.1f}",
            "sex": "M" if rng.random() < 0.5 else "F",
            "site": f"site{i % sites}",
            "survival_months": f"{rng.exponential(30):.1f}",
            "event": str(int(rng.random() < 0.6)),
        }
        for s in range(sessions):
            rows.append(subject | {"session_id": f"ses-{s + 1}" if sessions > 1 else None})
    return pd.DataFrame(rows)


def split(rows: pd.DataFrame, task: str = "binary", target="diagnosis", survival=None, **options):
    options.setdefault("p_threshold", 0.0)
    config = SplitSettings(**options)
    subjects = subject_table(rows, target, task, survival, config)
    return make_splits(subjects, config, task, class_labels(subjects, target, task, survival))


def roles(result) -> pd.DataFrame:
    """subject x fold table of roles."""
    return result.assignments.pivot(index="participant_id", columns="fold", values="role")


# ----------------------------------------------------------------- properties


@st.composite
def cohorts(draw):
    n_classes = draw(st.integers(2, 3))
    folds = draw(st.integers(2, 5))
    n = draw(st.integers(folds * n_classes, 90))
    return (
        cohort(n, n_classes, seed=draw(st.integers(0, 10_000))),
        folds,
        draw(st.integers(0, 2**31)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohorts())
def test_random_cohorts_split_without_leakage_and_with_balanced_classes(case):
    rows, folds, seed = case
    result = split(rows, folds=folds, seed=seed)
    table = roles(result)
    # Every subject has exactly one role in every fold, and is tested exactly once.
    assert table.notna().all().all() and table.shape == (len(rows), folds)
    assert ((table == "test").sum(axis=1) == 1).all()
    # Per fold, each class's test count is within one subject of the ideal n_class / k.
    for fold in range(1, folds + 1):
        test = rows.set_index("participant_id").loc[table.index[table[fold] == "test"]]
        for label, n_label in rows.diagnosis.value_counts().items():
            ideal = n_label / folds
            assert abs((test.diagnosis == label).sum() - ideal) < 1, (fold, label)
        assert (table[fold] == "train").any()
    # Same table, same seed: identical folds.
    pd.testing.assert_frame_equal(
        split(rows, folds=folds, seed=seed).assignments, result.assignments
    )


@settings(max_examples=25, deadline=None)
@given(st.integers(12, 60), st.integers(2, 4), st.integers(0, 2**31))
def test_adding_a_subject_moves_at_most_k_minus_1_others(n, folds, seed):
    rows = cohort(n + 1)
    before = roles(split(rows.iloc[:n], folds=folds, seed=seed))
    after = roles(split(rows, folds=folds, seed=seed))
    test_before = before.eq("test").idxmax(axis=1)
    test_after = after.eq("test").idxmax(axis=1).loc[test_before.index]
    assert (test_before != test_after).sum() <= folds - 1


@settings(max_examples=20, deadline=None)
@given(st.integers(10, 50), st.integers(0, 2**31))
def test_every_session_of_a_subject_lands_on_one_side(n, seed):
    rows = cohort(n, sessions=2)
    result = split(rows, folds=2, seed=seed)
    assert len(result.subjects) == n
    assert result.assignments.groupby(["fold", "participant_id"]).size().eq(1).all()


# ----------------------------------------------------------------- strategies


def test_validation_part_is_carved_from_training_subjects_only():
    rows = cohort(60)
    result = split(rows, folds=5, validation_fraction=0.25)
    table = roles(result)
    for fold in table.columns:
        counts = table[fold].value_counts()
        assert counts["test"] == 12 and counts["validation"] == 12 and counts["train"] == 36
        validation = rows.set_index("participant_id").loc[table.index[table[fold] == "validation"]]
        assert validation.diagnosis.value_counts().to_dict() == {"class0": 6, "class1": 6}


def test_survival_is_stratified_by_event_and_time():
    rows = cohort(60)
    survival = {"time": "survival_months", "event": "event"}
    result = split(rows, "survival", target="survival_months", survival=survival, folds=3)
    assert set(result.subjects.stratum) == {f"event{e}_t{q}" for e in (0, 1) for q in (1, 2, 3)}
    table = roles(result)
    events = rows.set_index("participant_id").event.astype(int)
    times = rows.set_index("participant_id").survival_months.astype(float)
    for fold in table.columns:
        test = table.index[table[fold] == "test"]
        assert abs(events[test].sum() - events.sum() / 3) <= 3  # one per time bin at most
        assert abs(np.median(times[test]) - np.median(times)) < 0.6 * times.std()


def test_group_by_site_never_splits_a_site_across_roles():
    rows = cohort(80, sites=8)
    result = split(rows, folds=4, group_by="site")
    assert result.strategy == "grouped"
    merged = result.assignments.merge(result.subjects[["participant_id", "site"]])
    assert merged.groupby(["fold", "site"]).role.nunique().eq(1).all()
    assert roles(result).eq("test").sum(axis=1).eq(1).all()


@pytest.mark.parametrize("fraction", [0.05, 0.3])
def test_grouped_validation_takes_whole_groups_of_the_configured_size(fraction):
    rows = cohort(160, sites=16)  # 10 subjects per site
    result = split(rows, folds=4, group_by="site", validation_fraction=fraction)
    sizes = result.assignments.groupby("fold").role.value_counts().unstack()
    training_part = sizes["train"] + sizes["validation"]
    # whole sites of 10: the smallest number of sites reaching the fraction
    expected = np.ceil(fraction * training_part / 10) * 10
    assert (sizes["validation"] == expected).all()


def test_a_subject_listed_twice_is_an_error_naming_it():
    rows = cohort(20)
    rows = pd.concat([rows, rows.iloc[[3]]], ignore_index=True)
    with pytest.raises(InputError, match=r"lists sub-00003 .*more than once .*Fix: remove"):
        split(rows)
    sessions = cohort(10, sessions=2)  # two sessions per subject are not duplicates
    assert len(split(sessions).subjects) == 10


def test_leave_site_out_tests_each_site_once():
    rows = cohort(40, sites=2)
    result = split(rows, folds=2, group_by="site", leave_group_out=True)
    merged = result.assignments.merge(result.subjects[["participant_id", "site"]])
    tested = merged[merged.role == "test"].groupby("fold").site.unique()
    assert sorted(s[0] for s in tested) == ["site0", "site1"] and all(len(s) == 1 for s in tested)
    with pytest.raises(
        ConfigError, match=r"one fold per 'site' value and there are 2. Fix: set folds: 2"
    ):
        split(rows, folds=3, group_by="site", leave_group_out=True)


def test_fixed_held_out_test_set_is_the_same_in_every_fold():
    rows = cohort(50)
    result = split(rows, folds=4, test_fraction=0.2)
    table = roles(result)
    test_sets = {frozenset(table.index[table[f] == "test"]) for f in table.columns}
    assert len(test_sets) == 1 and len(next(iter(test_sets))) == 10
    assert table.eq("validation").sum(axis=1).max() == 1  # the rest rotates through validation


def test_multilabel_uses_iterative_stratification():
    rng = np.random.default_rng(3)
    rows = cohort(90)
    for label in ("tumour", "oedema", "necrosis"):
        rows[label] = (rng.random(len(rows)) < 0.4).astype(int).astype(str)
    target = ["tumour", "oedema", "necrosis"]
    result = split(rows, "multilabel", target=target, folds=3)
    assert result.strategy == "multilabel"
    table = roles(result)
    assert table.eq("test").sum(axis=1).eq(1).all()
    labels = rows.set_index("participant_id")[target].astype(int)
    for fold in table.columns:
        prevalence = labels.loc[table.index[table[fold] == "test"]].mean()
        np.testing.assert_allclose(prevalence, labels.mean(), atol=0.06)


def test_multilabel_feasibility_counts_each_label_not_each_combination():
    """Eight findings on 36 subjects: nearly every combination of findings is unique, yet
    each finding has enough positives and negatives for 3 folds; a finding with only 2
    positives cannot be spread over 3 folds and is named."""
    rng = np.random.default_rng(4)
    rows = cohort(36)
    target = [f"finding{k}" for k in range(8)]
    for label in target:
        rows[label] = (rng.random(len(rows)) < 0.5).astype(int).astype(str)
    assert rows[target].agg("".join, axis=1).value_counts().min() < 3
    result = split(rows, "multilabel", target=target, folds=3)
    assert roles(result).eq("test").sum(axis=1).eq(1).all()
    rows["finding7"] = "0"
    rows.loc[:1, "finding7"] = "1"
    with pytest.raises(ConfigError, match="class 'finding7=1' has only 2 subjects"):
        split(rows, "multilabel", target=target, folds=3)
    rows.loc[5, "finding3"] = "nan"
    with pytest.raises(InputError, match=r"column 'finding3' must hold 0 or 1; sub-\w+ hold 'nan'"):
        split(rows, "multilabel", target=target, folds=3)


# ----------------------------------------------------------------- balance


def test_unbalanced_draws_are_redrawn_and_recorded():
    rows = cohort(40, seed=5)
    result = split(rows, folds=4, p_threshold=0.3)
    assert result.attempts[-1]["passed"] and result.attempts[-1]["worst_p"] >= 0.3
    assert all(not a["passed"] for a in result.attempts[:-1])
    assert len({a["seed"] for a in result.attempts}) == len(result.attempts)


def test_no_balanced_split_is_a_clear_error():
    rows = cohort(40)
    rows["sex"] = np.where(rows.diagnosis == "class0", "M", "F")  # sex follows the class
    rows["age"] = rows.index.astype(str)  # age differs sharply by hash order
    with pytest.raises(
        ConfigError,
        match=r"no split in 5 attempts has age/sex p-values of at least 0.99.*"
        r"Fix: lower p_threshold, raise max_attempts",
    ):
        split(rows, folds=4, p_threshold=0.99, max_attempts=5)


# ----------------------------------------------------------------- bad requests


def test_more_folds_than_the_smallest_class():
    rows = cohort(20)
    rows.loc[rows.index[:8], "diagnosis"] = "rare"  # 8 rare... then keep only 3 of them
    rows = rows.drop(rows.index[3:8])
    with pytest.raises(
        ConfigError,
        match=r"splits.folds': 5 folds but class 'rare' has only 3 subjects.*"
        r"use at most 3 folds",
    ):
        split(rows, folds=5)


def test_class_with_a_single_subject():
    rows = cohort(12)
    rows.loc[0, "diagnosis"] = "unique"
    with pytest.raises(ConfigError, match=r"class 'unique' has a single subject"):
        split(rows, folds=2)


def test_empty_cohort():
    with pytest.raises(InputError, match=r"has no subjects \(empty cohort after filters\)"):
        split(cohort(10).iloc[:0], folds=2)


def test_sessions_that_disagree_on_the_label():
    rows = cohort(10, sessions=2)
    rows.loc[1, "diagnosis"] = "class1"
    with pytest.raises(InputError, match=r"sessions of sub-00000 disagree on diagnosis"):
        split(rows, folds=2)


def test_missing_label_or_column():
    rows = cohort(10)
    rows.loc[2, "diagnosis"] = None
    with pytest.raises(InputError, match=r"subjects sub-00002 have no diagnosis"):
        split(rows, folds=2)
    with pytest.raises(InputError, match=r"has no column 'centre'"):
        split(cohort(10), folds=2, group_by="centre")


def test_leakage_check_catches_a_subject_with_two_roles():
    result = split(cohort(20), folds=2)
    leaked = pd.concat([result.assignments, result.assignments.iloc[[0]].assign(role="test")])
    with pytest.raises(
        InputError, match=r"fold 1: subjects \['sub-00000'\] have two roles \(leakage\)"
    ):
        check_no_leakage(leaked, result.subjects, fixed_test=False)
    never = result.assignments[
        ~((result.assignments.participant_id == "sub-00000") & (result.assignments.role == "test"))
    ]
    with pytest.raises(InputError, match=r"does not cover every subject"):
        check_no_leakage(never, result.subjects, fixed_test=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"folds": 1}, r"splits.folds': 1 folds cannot cross-validate"),
        ({"validation_fraction": 1.5}, r"validation_fraction': must lie in \(0, 1\)"),
        (
            {"leave_group_out": True},
            r"leave_group_out': needs the group column. Fix: set group_by: site",
        ),
        ({"fold": 3}, r"splits.fold': is not a parameter"),
        ({"folds": "five"}, r"splits.folds': must be int"),
    ],
)
def test_impossible_settings(options, message):
    from neuroadapt.spec import spec_from_mapping

    with pytest.raises(ConfigError, match=message):
        spec_from_mapping(SplitSettings, options, "experiments.x.splits")


# ----------------------------------------------------------------- outputs


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_outputs_are_complete_and_byte_identical(tmp_path):
    table = tmp_path / "subjects.tsv"
    cohort(30, sessions=2).to_csv(table, sep="\t", index=False, na_rep="n/a")
    experiment = {
        "dataset": "d",
        "target": "diagnosis",
        "task": "binary",
        "splits": {"folds": 3, "seed": 7, "p_threshold": 0.1},
    }
    split_experiment("exp", experiment, table, tmp_path / "a")
    split_experiment("exp", experiment, table, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert sorted(_digest(tmp_path / "a")) == [
        "balance.png",
        "fold-1.tsv",
        "fold-2.tsv",
        "fold-3.tsv",
        "splits.json",
    ]
    fold = pd.read_csv(tmp_path / "a" / "fold-1.tsv", sep="\t")
    assert list(fold.columns) == ["participant_id", "role", "stratum"] and len(fold) == 30
    summary = json.loads((tmp_path / "a" / "splits.json").read_text())
    assert summary["parameters"]["seed"] == 7 and summary["n_subjects"] == 30
    assert summary["versions"]["scikit-learn"] and summary["attempts"][-1]["passed"]
    first = summary["folds"][0]
    assert sum(first["sizes"].values()) == 30
    assert first["class_counts"]["test"] == {"class0": 5, "class1": 5}
    assert set(first["balance"]) == {"train_vs_test", "train_vs_validation"}


def _experiment(**splits):
    return {
        "dataset": "d",
        "target": "diagnosis",
        "task": "binary",
        "splits": {"folds": 3, **splits},
    }


def test_an_absent_sex_column_skips_its_check_with_a_warning(tmp_path, caplog):
    table = tmp_path / "subjects.tsv"
    cohort(30).drop(columns="sex").to_csv(table, sep="\t", index=False, na_rep="n/a")
    with caplog.at_level("WARNING"):
        result = split_experiment("exp", _experiment(), table, tmp_path / "out")
    assert "no column 'sex'; the sex balance check of experiments.exp.splits is skipped" in (
        caplog.text
    )
    balance = result.attempts[-1]["balance"]
    assert all("sex_p" not in entry[part] for entry in balance for part in entry)
    assert all("age_p" in entry["train_vs_test"] for entry in balance)


def test_an_absent_balance_column_stops_when_required(tmp_path):
    table = tmp_path / "subjects.tsv"
    cohort(30).drop(columns="age").to_csv(table, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(
        InputError,
        match=r"subjects.tsv: has no column 'age' for the balance check "
        r"\(experiments.exp.splits.age_column\).*Fix: add the column",
    ):
        split_experiment("exp", _experiment(require_balance_columns=True), table, tmp_path / "o")


def test_top_coded_ages_count_as_their_bound_and_other_text_is_an_error(caplog):
    rows = cohort(12)
    rows.loc[0, "age"] = "89+"
    with caplog.at_level("WARNING"):
        subjects = subject_table(rows, "diagnosis", "binary", None, SplitSettings(folds=2))
    assert subjects.loc[0, "age"] == 89 and "1 age value(s) such as '89+' are top-coded" in (
        caplog.text
    )
    rows.loc[1, "age"] = "ten"
    with pytest.raises(
        InputError, match=r"has age values that are not numbers: sub-00001 'ten'.*Fix: write ages"
    ):
        subject_table(rows, "diagnosis", "binary", None, SplitSettings(folds=2))
