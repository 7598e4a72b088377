import math

import pytest
import torch

from pyro_irm import SimulationConfig, simulate, simulate_from_scores
from pyro_irm.groups import group_components


def _se(p, n):
    return math.sqrt(p * (1 - p) / n)


def test_truth_is_consistent_and_action_is_r_and_o():
    data = simulate(SimulationConfig(num_rows=5000))
    truth = data.truth
    r, o = group_components(truth.group)
    assert torch.equal(r.float(), truth.preference) and torch.equal(o.float(), truth.engagement)
    assert torch.equal(data.actions, truth.preference * truth.engagement)


def test_rates_match_the_configuration():
    config = SimulationConfig(num_rows=40_000, positive_rate=0.3, observation_rate=0.2)
    truth = simulate(config).truth
    assert abs(truth.engagement.mean().item() - 0.2) < 4 * _se(0.2, 40_000)
    # r is drawn with P(r=1) = sigmoid(sharpness (score - t)), t the world's 70% quantile.
    assert abs(truth.preference.mean().item() - 0.3) < 0.02


def test_propensity_is_biased_by_features_and_not_by_preference():
    data = simulate(SimulationConfig(num_rows=40_000, preference_bias=0.0))
    truth = data.truth
    by_r = [truth.engagement[truth.preference == v].mean().item() for v in (0, 1)]
    assert abs(by_r[0] - by_r[1]) < 0.03
    position = data.context[:, 0]
    low, high = position.min(), position.max()
    assert truth.engagement[position == low].mean() > truth.engagement[position == high].mean() + 0.3


def test_preference_bias_makes_positives_act_more():
    truth = simulate(SimulationConfig(num_rows=20_000, preference_bias=2.0)).truth
    rate = [truth.engagement[truth.preference == v].mean().item() for v in (0, 1)]
    assert rate[1] - rate[0] > 0.25


def test_noise_rates_flip_actions():
    config = SimulationConfig(num_rows=60_000, eps0=0.1, eps1=0.2)
    data = simulate(config)
    truth = data.truth
    engaged = truth.engagement == 1
    false_positive = data.actions[engaged & (truth.preference == 0)].mean().item()
    missed = 1 - data.actions[engaged & (truth.preference == 1)].mean().item()
    assert abs(false_positive - 0.1) < 4 * _se(0.1, 15_000)
    assert abs(missed - 0.2) < 4 * _se(0.2, 15_000)
    assert data.actions[truth.engagement == 0].sum() == 0


def test_same_world_shares_the_truth_across_samples():
    a = simulate(SimulationConfig(num_rows=2000, seed=0))
    b = simulate(SimulationConfig(num_rows=2000, seed=1))
    # One world: the same score function, so a linear fit of score on embeddings transfers.
    coef = torch.linalg.lstsq(a.embeddings, a.truth.score[:, None]).solution
    residual = b.truth.score[:, None] - b.embeddings @ coef
    assert residual.var() < 0.5 * b.truth.score.var()
    other_world = simulate(SimulationConfig(num_rows=2000, seed=1, world_seed=7))
    residual = other_world.truth.score[:, None] - other_world.embeddings @ coef
    assert residual.var() > 0.8 * other_world.truth.score.var()


def test_alpha_power_follows_the_papers_rescaling():
    scores = torch.linspace(1, 10, 10_000)
    config = SimulationConfig(propensity_form="alpha_power", alpha=0.5, observation_rate=0.5)
    data = simulate_from_scores(
        torch.randn(10_000, 4), scores, threshold=6.5, config=config, score_range=(1, 10)
    )
    truth = data.truth
    assert torch.equal(truth.preference, (scores > 6.5).float())
    pi = truth.propensity_probability
    assert abs(pi.mean().item() - 0.5) < 1e-3 and pi.max().item() <= 1.0
    # Uncapped, the ratio between label grades l' and l' + 1 is 1 / alpha.
    graded = 1 + 4 * (scores - 1) / 9
    uncapped = pi < 1.0
    ratio = (pi[uncapped].log() - pi[uncapped][0].log()) / (graded[uncapped] - graded[uncapped][0])
    assert torch.allclose(ratio[1:], torch.full_like(ratio[1:], math.log(2.0)), atol=1e-4)
    assert data.context is None


def test_semi_synthetic_rejects_bad_scores():
    with pytest.raises(ValueError, match="scores: row 1 is nan"):
        simulate_from_scores(torch.randn(3, 4), torch.tensor([1.0, float("nan"), 2.0]), 1.5)
    with pytest.raises(ValueError, match="scores: 2 rows but embeddings has 3"):
        simulate_from_scores(torch.randn(3, 4), torch.tensor([1.0, 2.0]), 1.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"observation_rate": 1.0}, "observation_rate"),
        ({"eps0": 0.6}, "eps0"),
        ({"propensity_form": "cubic"}, "propensity_form"),
        ({"num_rows": 0}, "num_rows"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**kwargs)
