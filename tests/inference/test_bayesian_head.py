"""The Bayesian reward head: SVI against NUTS, and per-row reward uncertainty."""

import numpy as np
import pytest
import torch

from pyro_irm import ModelConfig, SimulationConfig, TrainConfig, fit, simulate
from pyro_irm.analysis.convert import head_inference_data, summary
from pyro_irm.inference.bayesian_head import (
    HeadConfig,
    compare_posteriors,
    fit_bayesian_head,
    fit_head_nuts,
    fit_head_svi,
)
from pyro_irm.models import ImplicitFeedbackModel
from pyro_irm.models.bayesian_head import log1mexp, seed_paper_likelihood


def _small_problem(rows=400, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(rows, 3, generator=generator)
    preference = torch.bernoulli(
        torch.sigmoid(features @ torch.tensor([1.5, -1.0, 0.5]) + 0.3), generator=generator
    )
    propensity_logits = torch.randn(rows, generator=generator)
    acted = torch.bernoulli(torch.sigmoid(propensity_logits), generator=generator)
    return features, preference * acted, propensity_logits


def test_log1mexp_is_stable_at_both_ends():
    log_p = torch.tensor([-1e-8, -0.1, -0.7, -5.0, -50.0], dtype=torch.float64)
    torch.testing.assert_close(log1mexp(log_p), torch.log(1 - torch.exp(log_p)), rtol=1e-6, atol=1e-15)


@pytest.mark.slow
def test_svi_and_nuts_agree_on_a_small_four_group_problem():
    """Posterior means within 0.5 NUTS standard deviations, spreads within 30%; NUTS mixes
    (r_hat below 1.05, bulk ESS above 150 from 2 chains of 300 draws)."""
    features, actions, propensity_logits = _small_problem()
    config = HeadConfig(draws=300, warmup=200, svi_steps=1500)
    likelihood = seed_paper_likelihood(actions, propensity_logits)
    nuts = fit_head_nuts(features, likelihood, config=config)
    svi = fit_head_svi(features, likelihood, config=config)
    gaps = compare_posteriors(nuts, svi)
    assert gaps["max_mean_gap_in_sd"] < 0.5, gaps
    assert 0.7 < gaps["min_sd_ratio"] and gaps["max_sd_ratio"] < 1.3, gaps
    table = summary(head_inference_data(nuts))
    assert (table["r_hat"] < 1.05).all() and (table["ess_bulk"] > 150).all(), table
    # The truth (1.5, -1.0, 0.5, 0.3) lies within 3 posterior standard deviations.
    z = np.abs(nuts.means() - np.array([1.5, -1.0, 0.5, 0.3])) / nuts.standard_deviations()
    assert z.max() < 3


def test_seed_paper_likelihood_is_the_models_own_in_float64():
    torch.manual_seed(0)
    model = ImplicitFeedbackModel(3, 0, ModelConfig(reward_hidden=(4,), propensity_hidden=(4,))).double()
    embeddings = torch.randn(9, 3, dtype=torch.float64)
    actions = torch.tensor([1, 0, 0, 1, 0, 1, 0, 0, 1], dtype=torch.float64)
    reward = torch.randn(9, dtype=torch.float64)
    propensity_logits = model.propensity_logits(embeddings)[:, 0]
    closed = seed_paper_likelihood(actions, propensity_logits)(reward)
    torch.testing.assert_close(
        model.log_marginal_given_reward(reward, embeddings, actions), closed, atol=1e-12, rtol=0
    )


def test_reward_model_gives_per_row_reward_intervals(tmp_path):
    data = simulate(SimulationConfig(num_rows=1500, embedding_dim=6, seed=2))
    model = fit(data, TrainConfig(inference="fused", max_epochs=5, progress=False)).reward_model
    with pytest.raises(ValueError, match="head_posterior = fit_bayesian_head"):
        model.reward_draws(data.embeddings[:5])
    posterior = model.head_posterior = fit_bayesian_head(
        model,
        data.embeddings,
        data.actions,
        data.context,
        config=HeadConfig(svi_steps=300, draws=100, chains=1),
    )
    assert posterior.weight.shape == (1, 100, model.config.reward_hidden[-1])
    mean, low, high = model.reward_interval(data.embeddings[:50])
    assert mean.shape == (50,) and torch.all(low < mean) and torch.all(mean < high)
    # The head's posterior mean stays close to the point estimate it replaces.
    assert torch.corrcoef(torch.stack([mean, model.score(data.embeddings[:50])]))[0, 1] > 0.9
    # The head's draws are saved with the model and load back exactly.
    from pyro_irm import RewardModel

    loaded = RewardModel.load(model.save(tmp_path / "model"))
    torch.testing.assert_close(
        loaded.reward_draws(data.embeddings[:50]), model.reward_draws(data.embeddings[:50])
    )


@pytest.mark.slow
def test_laplace_head_keeps_the_point_fit_inside_its_intervals():
    """The Laplace head is centred on the fitted layer: its mean is the point reward (to Monte Carlo
    error) and every row's 90% interval holds the point estimate; SVI's prior sits there too."""
    from pyro_irm import RewardModel  # noqa: F401

    data = simulate(SimulationConfig(num_rows=2000, seed=0))
    model = fit(data, TrainConfig(inference="fused", progress=False)).reward_model
    point = model.score(data.embeddings)
    model.head_posterior = fit_bayesian_head(
        model, data.embeddings, data.actions, data.context, config=HeadConfig(draws=400, chains=1)
    )
    mean, low, high = model.reward_interval(data.embeddings)
    assert ((low <= point) & (point <= high)).float().mean() > 0.99
    assert (mean - point).abs().mean() < 0.1
    assert (high - low).min() > 0


def test_head_fits_a_multi_channel_model_with_users():
    from pyro_irm.data.chatlog import ChatLogConfig, simulate_chatlog

    data = simulate_chatlog(800, embedding_dim=6, config=ChatLogConfig(seed=0))
    model = fit(data, TrainConfig(inference="fused", max_epochs=3, progress=False)).reward_model
    posterior = model.head_posterior = fit_bayesian_head(
        model,
        data.embeddings,
        data.actions,
        data.context,
        users=data.users,
        config=HeadConfig(draws=50, chains=1),
    )
    assert posterior.method == "laplace" and posterior.weight.shape == (1, 50, model.config.reward_hidden[-1])
    _, low, high = model.reward_interval(data.embeddings[:20])
    assert torch.all(low < high)
