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
from pyro_irm.models.head_posterior import log1mexp, seed_paper_likelihood


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
        "laplace",
        config=HeadConfig(draws=100, chains=1),
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
        model, data.embeddings, data.actions, data.context, "laplace", HeadConfig(draws=400, chains=1)
    )
    mean, low, high = model.reward_interval(data.embeddings)
    assert ((low <= point) & (point <= high)).float().mean() > 0.99
    assert (mean - point).abs().mean() < 0.1
    assert (high - low).min() > 0


def test_head_fits_a_multi_channel_model_with_users():
    from pyro_irm.data.chatlog_simulation import ChatLogConfig, simulate_chatlog

    data = simulate_chatlog(800, embedding_dim=6, config=ChatLogConfig(seed=0))
    model = fit(data, TrainConfig(inference="fused", max_epochs=3, progress=False)).reward_model
    for method in ("laplace", "network"):
        posterior = model.head_posterior = fit_bayesian_head(
            model,
            data.embeddings,
            data.actions,
            data.context,
            method,
            users=data.users,
            config=HeadConfig(draws=50, chains=1),
        )
        assert posterior.method == method
        if method == "laplace":
            assert posterior.weight.shape == (1, 50, model.config.reward_hidden[-1])
        _, low, high = model.reward_interval(data.embeddings[:20])
        assert torch.all(low < high)


# -- the posterior over the whole reward network ------------------------------------------------


def _tiny_network_fit(rows=300, seed=0):
    data = simulate(SimulationConfig(num_rows=rows, embedding_dim=4, seed=seed))
    config = TrainConfig(inference="fused", max_epochs=3, progress=False)
    model = fit(data, config, ModelConfig(reward_hidden=(5, 3))).reward_model
    return data, model


def test_network_posterior_factors_are_the_curvature_of_the_models_likelihood():
    """A = sum a a^T / N and B = sum lambda g g^T per layer, with lambda the second derivative of
    the seed paper's closed-form likelihood and g the Jacobian of the reward, computed here by
    hand in float64."""
    from torch.func import functional_call

    data, model = _tiny_network_fit()
    posterior = fit_bayesian_head(model, data.embeddings, data.actions, data.context)
    net = model.model.reward_net
    params = {k: v.detach().double() for k, v in net.named_parameters()}
    x = data.embeddings.double()
    # lambda_n: -d^2/df^2 of log P(y | f, g) with P(y = 1) = sigmoid(f) sigmoid(g).
    g = model.model.propensity_logits(data.embeddings, data.context)[:, 0].detach().double()
    f = functional_call(net.double(), params, (x,)).squeeze(-1).detach().requires_grad_(True)
    closed = seed_paper_likelihood(data.actions.double(), g)(f).sum()
    (slope,) = torch.autograd.grad(closed, f, create_graph=True)
    (curve,) = torch.autograd.grad(slope.sum(), f)
    weight = (-curve).clamp_min(0)
    net.float()
    # Layer 0's input is the embedding; its output gradient is d f / d (pre-activation 0).
    pre = (x @ params["0.weight"].T + params["0.bias"]).requires_grad_(True)
    rest = torch.nn.Sequential(*list(net)[1:]).double()
    (grad,) = torch.autograd.grad(rest(pre).sum(), pre)
    rest.float()
    a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    factors = posterior.layers[0]
    A = factors.input_vectors @ torch.diag(factors.input_values) @ factors.input_vectors.T
    B = factors.output_vectors @ torch.diag(factors.output_values) @ factors.output_vectors.T
    torch.testing.assert_close(A, a.T @ a / len(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(B, (grad * weight[:, None]).T @ grad, atol=1e-5, rtol=1e-3)


def test_network_posterior_variance_is_the_linearized_gaussians_exactly():
    """Each row's variance equals J Sigma J^T with the full Jacobian and the Kronecker-factored
    covariance built explicitly; the joint draws have that variance too (Monte Carlo)."""
    from torch.func import functional_call, jacrev

    from pyro_irm.models.head_posterior import NetworkPosterior

    data, model = _tiny_network_fit()
    posterior = fit_bayesian_head(model, data.embeddings, data.actions, data.context)
    assert isinstance(posterior, NetworkPosterior) and posterior.method == "network"
    net = model.model.reward_net
    rows = data.embeddings[:7]
    params = {k: v.detach() for k, v in net.named_parameters()}
    jacobian = jacrev(lambda p: functional_call(net, p, (rows,)).squeeze(-1))(params)
    blocks, parts = [], []
    for i, factors in enumerate(posterior.layers):
        # vec(W | b) row-major over (output, input + 1): the Jacobian of each row is g a^T.
        weight_j, bias_j = jacobian[f"{2 * i}.weight"], jacobian[f"{2 * i}.bias"]
        parts.append(torch.cat([weight_j, bias_j[..., None]], dim=-1).reshape(len(rows), -1).double())
        basis = torch.kron(factors.output_vectors, factors.input_vectors)
        values = 1.0 / (torch.kron(factors.output_values, factors.input_values) + posterior.tau)
        blocks.append(basis @ torch.diag(values) @ basis.T)
    jac = torch.cat(parts, dim=1)
    covariance = torch.block_diag(*blocks)
    expected = (jac @ covariance @ jac.T).diagonal().sqrt()
    mean, sd = posterior.reward_moments(net, rows)
    torch.testing.assert_close(sd.double(), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mean, model.score(rows))
    draws = NetworkPosterior(posterior.layers, posterior.prior_scale, 4000, 0).sample_rewards(net, rows)[0]
    ratio = draws.std(0).double() / expected
    assert torch.all((ratio - 1).abs() < 0.06), ratio  # sd of 4,000 draws: about 1.1% error


def test_network_prior_scale_maximizes_the_laplace_evidence():
    """The chosen scale beats its neighbours on the evidence, and the evidence's differences equal
    the explicit ``log p(theta | s) - 1/2 log det(precision)`` with the Kronecker products built."""
    from pyro_irm.inference.bayesian_head import PRIOR_SCALE_GRID, network_log_evidence

    data, model = _tiny_network_fit()
    posterior = fit_bayesian_head(model, data.embeddings, data.actions, data.context)
    layers = [m for m in model.model.reward_net if isinstance(m, torch.nn.Linear)]
    theta = (
        torch.cat([torch.cat([m.weight, m.bias[:, None]], 1).reshape(-1) for m in layers]).detach().double()
    )
    curvature = torch.block_diag(
        *[torch.kron(torch.diag(f.output_values), torch.diag(f.input_values)) for f in posterior.layers]
    )  # in the eigenbases, whose rotation leaves the determinant alone

    def explicit(scale):
        tau = 1 / scale**2
        prior = -0.5 * tau * theta @ theta + 0.5 * len(theta) * np.log(tau)
        return float(prior - 0.5 * torch.logdet(curvature + tau * torch.eye(len(theta), dtype=theta.dtype)))

    squared = float(theta @ theta)
    for low, high in [(0.1, 0.5), (0.5, 2.0)]:
        ours = network_log_evidence(posterior.layers, squared, high) - network_log_evidence(
            posterior.layers, squared, low
        )
        assert ours == pytest.approx(explicit(high) - explicit(low), rel=1e-6)
    chosen = posterior.prior_scale
    step = 10 ** (PRIOR_SCALE_GRID[1] - PRIOR_SCALE_GRID[0])
    best = network_log_evidence(posterior.layers, squared, chosen)
    assert best >= network_log_evidence(posterior.layers, squared, chosen * step)
    assert best >= network_log_evidence(posterior.layers, squared, chosen / step)


def test_network_posterior_saves_loads_and_exports_per_row_draws(tmp_path):
    from pyro_irm import RewardModel, to_inference_data

    data, model = _tiny_network_fit()
    model.head_posterior = fit_bayesian_head(
        model, data.embeddings, data.actions, data.context, config=HeadConfig(draws=50)
    )
    loaded = RewardModel.load(model.save(tmp_path / "model"))
    assert loaded.head_posterior.prior_scale == model.head_posterior.prior_scale
    for a, b in zip(
        loaded.reward_interval(data.embeddings), model.reward_interval(data.embeddings), strict=True
    ):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(loaded.reward_draws(data.embeddings), model.reward_draws(data.embeddings))
    # Rows scored in separate batches share the draws.
    split = torch.cat(
        [model.sample_rewards(data.embeddings[:100]), model.sample_rewards(data.embeddings[100:])], -1
    )
    torch.testing.assert_close(split, model.sample_rewards(data.embeddings))
    idata = to_inference_data(model, data, rows=np.arange(30), max_draws=20)
    reward = idata["posterior"]["reward"]
    assert reward.sizes["chain"] == 1 and reward.sizes["draw"] == 20 and reward.sizes["row"] == 30
    assert float(reward.std("draw").min()) > 0
    with pytest.raises(TypeError, match="to_inference_data"):
        head_inference_data(model.head_posterior)


@pytest.mark.slow
def test_network_posterior_covers_the_true_preference_logit():
    """On 4,000 rows of the default simulation (3 worlds), the network posterior's 90% intervals
    cover the true preference logit 4 (score - t) on 85-95% of rows, with the point estimate at
    their centre. A last-layer posterior covers about 45%: it does not see the features' error."""
    coverage, last_layer = [], []
    for seed in range(3):
        data = simulate(SimulationConfig(num_rows=4000, seed=seed))
        truth = torch.logit(data.truth.preference_probability.clamp(1e-6, 1 - 1e-6))
        model = fit(data, TrainConfig(inference="fused", progress=False)).reward_model
        model.head_posterior = fit_bayesian_head(
            model, data.embeddings, data.actions, data.context, config=HeadConfig(draws=10)
        )
        mean, low, high = model.reward_interval(data.embeddings)
        point = model.score(data.embeddings)
        torch.testing.assert_close(mean, point)
        assert torch.all((low < point) & (point < high))
        coverage.append(((low <= truth) & (truth <= high)).float().mean().item())
        if seed == 0:
            model.head_posterior = fit_bayesian_head(
                model, data.embeddings, data.actions, data.context, "laplace", HeadConfig(draws=400)
            )
            _, low, high = model.reward_interval(data.embeddings)
            last_layer.append(((low <= truth) & (truth <= high)).float().mean().item())
    assert 0.85 <= np.mean(coverage) <= 0.95, coverage
    assert min(coverage) > 0.8, coverage
    assert last_layer[0] < 0.6, last_layer
