import numpy as np
import pytest

from pyro_irm.analysis import label_metrics, pairwise_accuracy, r2


def test_pairwise_accuracy_counts_only_pairs_within_a_prompt():
    truth = np.array([3.0, 1.0, 2.0, 5.0, 5.0])
    groups = np.array(["a", "a", "a", "b", "b"])  # the b pair ties in truth: no pair there
    assert pairwise_accuracy(truth, truth, groups) == 1.0
    assert pairwise_accuracy(truth, -truth, groups) == 0.0
    predicted = np.array([0.9, 0.1, 0.1, 0.0, 1.0])  # (1, 2) tied in prediction counts one half
    assert pairwise_accuracy(truth, predicted, groups) == pytest.approx((1 + 1 + 0.5) / 3)
    assert np.isnan(pairwise_accuracy(truth, truth, np.arange(5)))


def test_r2_is_one_for_perfect_and_zero_for_the_mean():
    labels = np.array([0.0, 1.0, 1.0, 0.0])
    assert r2(labels, labels) == 1.0
    assert r2(labels, np.full(4, labels.mean())) == pytest.approx(0.0)


def test_label_metrics_ignore_rows_without_a_label():
    labels = np.array([1.0, 0.0, np.nan, 1.0])
    probabilities = np.array([0.9, 0.2, 0.99, 0.7])
    metrics = label_metrics(labels, probabilities, prompt_ids=["a", "a", "a", "b"])
    assert metrics["rows"] == 3 and metrics["auc"] == 1.0
    assert metrics["mae"] == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    assert metrics["pairwise_accuracy"] == 1.0
