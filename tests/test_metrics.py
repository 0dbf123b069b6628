"""Classification metrics, bootstrap intervals and the paired AUC comparison."""

from __future__ import annotations

import numpy as np
import pytest

from neuroadapt.metrics import (
    binary_metrics,
    bootstrap_intervals,
    paired_auc_comparison,
    safe_auc,
)


def test_binary_metrics_match_the_confusion_matrix_by_hand():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.4, 0.3, 0.2, 0.1, 0.05])
    m = binary_metrics(labels, scores)
    # threshold 0.5: TP 3, FN 1, FP 1, TN 5
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    mcc = (3 * 5 - 1 * 1) / np.sqrt(4 * 4 * 6 * 6)
    assert m["mcc"] == pytest.approx(mcc)
    # AUC: positives above negatives in 20.5 of 24 pairs (the 0.2 vs 0.2 tie counts a half)
    assert m["auc"] == pytest.approx(20.5 / 24)


def test_auc_of_one_class_is_undefined_not_zero():
    assert np.isnan(safe_auc(np.ones(5), np.linspace(0, 1, 5)))
    assert np.isnan(binary_metrics(np.zeros(4), np.full(4, 0.2))["sensitivity"])


def test_bootstrap_interval_brackets_the_point_estimate_and_is_reproducible():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(labels * 0.3 + rng.normal(0.35, 0.2, 200), 0, 1)
    point = binary_metrics(labels, scores)
    first = bootstrap_intervals(labels, scores, n_boot=300, seed=3)
    assert first == bootstrap_intervals(labels, scores, n_boot=300, seed=3)
    for name, (low, high) in first.items():
        assert low <= point[name] <= high, name
    assert 0.05 < first["auc"][1] - first["auc"][0] < 0.3


def test_paired_comparison_of_a_method_with_itself_is_null():
    labels = np.array([0, 1] * 20)
    scores = np.linspace(0, 1, 40)
    result = paired_auc_comparison(labels, scores, scores, n_boot=200)
    assert result["delta_auc"] == 0 and result["low"] == 0 and result["high"] == 0
    assert result["p"] == 1.0


def test_paired_comparison_detects_a_clearly_better_method():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120)
    good = labels + rng.normal(0, 0.5, 120)
    chance = rng.normal(0, 1, 120)
    result = paired_auc_comparison(labels, good, chance, n_boot=500, seed=1)
    assert result["delta_auc"] > 0.3
    assert result["low"] > 0 and result["p"] < 0.01


def test_vectorised_bootstrap_auc_equals_the_per_resample_one():
    from neuroadapt.metrics import bootstrap_auc, bootstrap_intervals, safe_auc

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 40)
    scores = np.round(labels * 0.3 + rng.uniform(0, 1, 40), 1)  # rounded: ties across classes
    auc, low, high = bootstrap_auc(labels, scores, n_boot=300, seed=5)
    slow = bootstrap_intervals(
        labels, scores, n_boot=300, seed=5, metric=lambda y, s: {"auc": safe_auc(y, s)}
    )["auc"]
    assert auc == pytest.approx(safe_auc(labels, scores))
    assert (low, high) == pytest.approx(slow)
    assert np.isnan(bootstrap_auc(np.zeros(5), np.arange(5.0))[0])
