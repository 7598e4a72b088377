"""ArviZ export, group diagnostics and the unbiasedness study."""

import numpy as np
import pytest
import torch

from pyro_irm import SimulationConfig, TrainConfig, fit, simulate
from pyro_irm.analysis.convert import arviz_major_version, summary, to_inference_data
from pyro_irm.analysis.group_diagnostics import diagnose_groups, diagnose_inference_data
from pyro_irm.analysis.metrics import auc
from pyro_irm.analysis.plots import plot_group_confusion, plot_group_reliability
from pyro_irm.analysis.unbiasedness import (
    UnbiasednessConfig,
    plot_unbiasedness,
    run_unbiasedness_study,
)
from pyro_irm.groups import GROUP_NAMES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fitted():
    data = simulate(SimulationConfig(num_rows=3000, embedding_dim=8, seed=5))
    result = fit(data, TrainConfig(inference="fused", max_epochs=30, progress=False))
    return data, result.reward_model


def test_inference_data_has_named_dims_truth_and_the_exact_likelihood(fitted):
    data, model = fitted
    idata = to_inference_data(model, data, rows=np.arange(100, 400))
    assert "posterior" not in idata.groups()  # a point fit has no draws, and no fake chain of one
    groups = idata["point_estimate"]["group_probability"]
    assert groups.dims == ("row", "group")
    assert list(groups["group"].values) == list(GROUP_NAMES)
    assert groups["row"].values[0] == 100 and groups.sizes["row"] == 300
    np.testing.assert_allclose(groups.sum("group").values, 1.0, atol=1e-5)
    # xarray selection by name works directly.
    silent = groups.sel(group="silent_positive", row=150).item()
    expected = model.posterior_groups(data.embeddings[150:151], data.actions[150:151], data.context[150:151])
    assert silent == pytest.approx(expected[0, 1].item(), abs=1e-6)
    truth = idata["constant_data"]["true_group"].values
    assert np.array_equal(truth, data.truth.group[100:400].numpy())
    log_likelihood = idata["point_estimate"]["log_likelihood"].values
    with torch.no_grad():
        exact = model.model.log_marginal(
            data.embeddings[100:400], data.actions[100:400], data.context[100:400]
        )
    np.testing.assert_allclose(log_likelihood, exact.numpy(), rtol=1e-5)
    table = summary(idata, var_names=["reward"], kind="stats")
    assert len(table) == 300 and list(table.columns) == ["mean"]  # no NaN spread of a single draw
    np.testing.assert_allclose(table["mean"].values, model.score(data.embeddings[100:400]).numpy(), rtol=1e-6)


def test_the_conversion_builds_the_container_of_the_installed_arviz(fitted):
    data, model = fitted
    idata = to_inference_data(model, data, rows=np.arange(10))
    expected = "InferenceData" if arviz_major_version() == 0 else "DataTree"
    assert type(idata).__name__ == expected


def test_group_diagnostics_on_known_probabilities():
    truth = np.array([0, 1, 2, 3, 1])
    perfect = np.eye(4)[truth]
    diagnostics = diagnose_groups(perfect, truth)
    assert diagnostics.accuracy == 1.0 and diagnostics.brier == 0.0 and diagnostics.calibration_error == 0.0
    assert diagnostics.confusion.trace() == 5
    uniform = np.full((5, 4), 0.25)
    spread = diagnose_groups(uniform, truth)
    assert spread.log_loss == pytest.approx(np.log(4))
    np.testing.assert_allclose(spread.expected_confusion.sum(axis=1), np.bincount(truth, minlength=4))
    with pytest.raises(ValueError, match="expected shape"):
        diagnose_groups(np.zeros((5, 3)), truth)


def test_fitted_groups_beat_the_prior_and_are_calibrated(fitted, tmp_path):
    data, model = fitted
    idata = to_inference_data(model, data)
    diagnostics = diagnose_inference_data(idata)
    majority = np.bincount(data.truth.group.numpy()).max() / len(data)
    # The fit reaches 0.74; its actions alone (a reward that ignores the text) reach about 0.50.
    assert diagnostics.accuracy > 0.65 > majority + 0.1
    assert diagnostics.calibration_error < 0.06
    assert auc(data.truth.preference, model.score(data.embeddings, data.context)) > 0.85
    no_action = diagnose_inference_data(idata, no_action_only=True)
    assert no_action.rows == int((data.actions == 0).sum())
    assert "| engaged_positive " in diagnostics.confusion_table()
    assert len(plot_group_reliability(diagnostics, tmp_path / "r.png").axes) == 4
    plot_group_confusion(diagnostics, tmp_path / "c.png")
    for name in ("r.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_unbiasedness_study_separates_biased_from_unbiased_objectives(tmp_path):
    """100 replicates of 1,000 rows: the true-posterior ImplicitRM, IPS and CausalRM estimates are
    within 3.5 standard errors of the true risk; naive and uPU are more than 20 away."""
    config = UnbiasednessConfig(replicates=100, rows=1000)
    result = run_unbiasedness_study(config, objectives=("naive", "upu", "ips", "causalrm", "implicitrm_true"))
    table = result.summary()
    for name in ("ips", "causalrm", "implicitrm_true"):
        assert abs(table[name]["mean_bias"]) < 3.5 * table[name]["standard_error"], (name, table[name])
    for name in ("naive", "upu"):
        assert abs(table[name]["mean_bias"]) > 20 * table[name]["standard_error"], (name, table[name])
        assert not table[name]["covers_zero"]
    assert "| naive " in result.format_table()
    plot_unbiasedness(result, tmp_path / "bias.png")
    assert (tmp_path / "bias.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_a_fitted_stratification_is_much_less_biased_than_naive():
    config = UnbiasednessConfig(replicates=30, rows=1000, stratification_rows=20_000)
    table = run_unbiasedness_study(config, objectives=("naive", "implicitrm_fitted")).summary()
    assert abs(table["implicitrm_fitted"]["mean_bias"]) < abs(table["naive"]["mean_bias"]) / 2


def test_a_bayesian_head_gives_draws_of_every_posterior_variable(fitted):
    from pyro_irm.inference import HeadConfig, fit_bayesian_head

    data, model = fitted
    model.head_posterior = fit_bayesian_head(
        model, data.embeddings, data.actions, data.context, "laplace", HeadConfig(draws=40)
    )
    try:
        idata = to_inference_data(model, data, rows=np.arange(50), max_draws=10)
        groups = idata["posterior"]["group_probability"]
        assert groups.sizes["chain"] == 2 and groups.sizes["draw"] == 10 and groups.sizes["row"] == 50
        np.testing.assert_allclose(groups.sum("group").values, 1.0, atol=1e-5)
        reward = idata["posterior"]["reward"]
        assert float(reward.std(("chain", "draw")).mean()) > 0  # the draws differ
        table = summary(idata, var_names=["reward"])  # with 2 chains, r_hat is defined
        assert "r_hat" in table.columns and len(table) == 50
        assert idata["log_likelihood"]["action"].sizes["draw"] == 10
    finally:
        model.head_posterior = None  # the module-scoped fit is shared
