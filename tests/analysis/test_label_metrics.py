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


def test_scikit_learn_gives_the_numbers_the_hand_written_formulas_gave():
    """The metrics moved to scikit-learn; on random data they equal the formulas they replaced."""
    import numpy as np
    import torch

    from pyro_irm.analysis.group_diagnostics import diagnose_groups
    from pyro_irm.analysis.metrics import group_accuracy, log_loss, mae, r2, rmse

    rng = np.random.default_rng(0)
    labels = (rng.random(500) < 0.4).astype(float)
    probabilities = np.clip(rng.random(500), 0, 1)
    probabilities[:3] = (0.0, 1.0, 1e-9)  # where the clipping at 1e-7 matters
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    assert mae(labels, probabilities) == pytest.approx(np.mean(np.abs(labels - probabilities)), abs=1e-12)
    assert rmse(labels, probabilities) == pytest.approx(
        np.sqrt(np.mean((labels - probabilities) ** 2)), abs=1e-12
    )
    expected = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log1p(-clipped))
    assert log_loss(labels, probabilities) == pytest.approx(expected, abs=1e-12)
    sst = np.sum((labels - labels.mean()) ** 2)
    assert r2(labels, probabilities) == pytest.approx(
        1 - np.sum((labels - probabilities) ** 2) / sst, abs=1e-12
    )
    assert np.isnan(r2(np.ones(5), probabilities[:5]))

    groups = rng.dirichlet(np.ones(4), size=400)
    true = rng.integers(0, 4, size=400)
    assert group_accuracy(true, torch.from_numpy(groups)) == pytest.approx(np.mean(groups.argmax(1) == true))
    diagnostics = diagnose_groups(groups, true)
    confusion = np.zeros((4, 4), dtype=int)
    np.add.at(confusion, (true, groups.argmax(1)), 1)
    np.testing.assert_array_equal(diagnostics.confusion, confusion)
    assert diagnostics.brier == pytest.approx(((groups - np.eye(4)[true]) ** 2).sum(1).mean(), abs=1e-12)
    assert diagnostics.accuracy == pytest.approx(np.mean(groups.argmax(1) == true))
