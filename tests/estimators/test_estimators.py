"""Every estimator behind one interface: nuisance estimates, objectives, and what they recover."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from pyro_irm import FeedbackData, RewardModel, SimulationConfig, TrainConfig, fit, simulate
from pyro_irm.analysis.metrics import auc
from pyro_irm.estimators import METHOD_NAMES, build_model
from pyro_irm.estimators.nuisance import anchor_flip_rates, elkan_noto_prior, relative_action_rate
from pyro_irm.estimators.risk_objective import LossObjective, PromptPartners
from pyro_irm.inference import EstimatorConfig, Nuisance, estimate_nuisance
from pyro_irm.inference.objectives import build_guide, build_objective
from pyro_irm.models import ModelConfig

FAST = dict(max_epochs=3, batch_size=256, progress=False)


@pytest.fixture(scope="module")
def observational_small():
    config = SimulationConfig(
        num_rows=600, embedding_dim=8, seed=3, setting="observational", eps0=0.1, eps1=0.2
    )
    return simulate(config)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_fits_and_round_trips(method, small_data, observational_small, tmp_path):
    data = observational_small if method == "dr" else small_data
    result = fit(data, TrainConfig(method=method, **FAST))
    assert result.method == method
    scores = result.reward_model.score(data.embeddings, data.context)
    assert scores.shape == (len(data),) and torch.isfinite(scores).all()
    assert auc(data.truth.preference, scores) > 0.7  # 0.74 to 0.90 at these seeds; a constant has 0.5
    assert len(result.history.validation_score) == result.history.epochs
    loaded = RewardModel.load(result.reward_model.save(tmp_path / method))
    torch.testing.assert_close(loaded.score(data.embeddings, data.context), scores)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_fits_an_observational_log(method, observational_small):
    result = fit(observational_small, TrainConfig(method=method, **FAST))
    assert np.isfinite(result.history.train_loss).all()


def test_doubly_robust_needs_an_observational_log(small_data):
    with pytest.raises(ValueError, match="needs an observational log"):
        fit(small_data, TrainConfig(method="dr", **FAST))


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        TrainConfig(method="bpr")


def test_elkan_noto_recovers_the_prior_when_acting_is_random_and_classes_separate():
    generator = np.random.default_rng(0)
    probability = (generator.random(40_000) < 0.3).astype(float)  # P(r = 1 | x) in {0, 1}
    preference = generator.random(40_000) < probability
    labelling = 0.35
    actions = (preference & (generator.random(40_000) < labelling)).astype(float)
    action_probability = labelling * probability  # the exact P(y = 1 | x)
    prior = elkan_noto_prior(action_probability, actions)
    assert abs(prior - preference.mean()) < 0.02


def test_anchor_points_recover_flip_rates_when_some_rows_are_sure():
    clean = np.concatenate([np.zeros(500), np.linspace(0, 1, 1000), np.ones(500)])
    eps1, eps0 = 0.2, 0.1
    noisy = (1 - eps1) * clean + eps0 * (1 - clean)
    estimated = anchor_flip_rates(noisy, 0.97)
    assert estimated == pytest.approx((eps1, eps0), abs=1e-9)


def test_relative_action_rate_is_capped_and_monotone():
    rate = relative_action_rate(np.linspace(0.01, 0.5, 100), 0.5)
    assert rate.max() == 1.0 and np.all(np.diff(rate) >= 0) and rate.min() > 0


def test_nuisance_estimates_come_from_the_log_not_the_truth(small_data):
    blind = FeedbackData(
        embeddings=small_data.embeddings, actions=small_data.actions, context=small_data.context
    )
    needs = {"propensity", "relative_propensity", "class_prior", "flip_rates"}
    with_truth = estimate_nuisance(small_data, needs, EstimatorConfig(), seed=0)
    without = estimate_nuisance(blind, needs, EstimatorConfig(), seed=0)
    torch.testing.assert_close(with_truth.propensity, without.propensity)
    assert with_truth.class_prior == without.class_prior
    assert with_truth.sources["class_prior"] == "Elkan-Noto"
    with pytest.raises(ValueError, match="propensity_source='given'"):
        estimate_nuisance(blind, {"propensity"}, EstimatorConfig(propensity_source="given"))


def test_given_nuisance_is_used_as_given(small_data):
    config = EstimatorConfig(propensity_source="given", class_prior=0.3, eps1=0.25, eps0=0.05)
    nuisance = estimate_nuisance(small_data, {"propensity", "class_prior", "flip_rates"}, config)
    torch.testing.assert_close(nuisance.propensity, small_data.truth.propensity_probability)
    assert (nuisance.class_prior, nuisance.eps1, nuisance.eps0) == (0.3, 0.25, 0.05)


def test_snips_propensity_is_self_normalized(observational_small, small_data):
    for data in (observational_small, small_data):
        model = build_model("snips", data.embedding_dim, data.context_dim, ModelConfig())
        nuisance = estimate_nuisance(data, {"propensity", "class_prior"}, EstimatorConfig())
        rows = torch.arange(len(data))
        objective = LossObjective("snips", model, data, data.actions, nuisance, EstimatorConfig(), rows)
        if data.observed is not None:
            assert (data.observed / objective.propensity).mean().item() == pytest.approx(1.0, abs=1e-5)
        else:
            mean_weight = (data.actions / objective.propensity).mean().item()
            assert mean_weight == pytest.approx(nuisance.class_prior, abs=1e-5)


def test_prompt_partners_share_the_prompt_and_differ_from_the_row():
    prompt_ids = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 7])  # row 6 is not in this set
    partners = PromptPartners(prompt_ids, rows, 8)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        drawn = partners.sample(rows, generator)
        assert torch.equal(prompt_ids[drawn], prompt_ids[rows])
        alone = torch.tensor([r in (5, 7) for r in rows.tolist()])
        assert torch.all((drawn != rows) | alone)  # 5 and 7 are alone in their prompt here
    with pytest.raises(ValueError, match="outside"):
        partners.sample(torch.tensor([6]))


def test_nnpu_takes_the_correction_step_when_its_negative_risk_goes_below_zero():
    data = FeedbackData(embeddings=torch.eye(4), actions=torch.tensor([1.0, 1.0, 0.0, 0.0]))
    model = build_model("nnpu", 4, 0, ModelConfig(reward_hidden=()))
    nuisance = Nuisance(class_prior=0.9)
    objective = LossObjective("nnpu", model, data, data.actions, nuisance, EstimatorConfig(), torch.arange(4))
    with torch.no_grad():  # the overfit corner: acted rows sure-positive, the others sure-negative
        model.reward_net[0].weight.copy_(torch.tensor([[20.0, 20.0, -20.0, -20.0]]))
        model.reward_net[0].bias.zero_()
    loss, risk = objective.risk(torch.arange(4))
    assert risk.item() >= 0 and loss.item() != risk.item()


def test_implicitrm_on_an_observational_log_treats_o_as_observed(observational_small):
    """Pyro's enumerated ELBO with o observed equals the closed form, and o pins the groups."""
    data = observational_small
    config = TrainConfig(method="implicitrm", inference="enumerate")
    model = build_model("implicitrm", data.embedding_dim, data.context_dim, ModelConfig(eps0=0.1, eps1=0.2))
    guide = build_guide(config, model)
    enumerated = build_objective(config, model, guide, data, data.actions)
    fused = build_objective(replace(config, inference="fused"), model, guide, data, data.actions)
    rows = torch.arange(len(data))
    exact = fused.validation_score(rows)
    assert enumerated.validation_score(rows) == pytest.approx(exact, abs=1e-6)
    assert -enumerated.loss_and_grads(rows, num_rows=len(data)) == pytest.approx(exact, abs=1e-5)
    # Without o the likelihood is a different one: o carries information.
    implicit = build_objective(config, model, guide, replace(data, observed=None), data.actions)
    assert abs(implicit.validation_score(rows) - exact) > 0.01
    with torch.no_grad():
        posterior = model.posterior_groups(data.embeddings, data.actions, data.context, data.observed)
    silent = posterior[:, [1, 3]].sum(-1)  # rows with o = 0 sit in the silent groups only
    torch.testing.assert_close(silent, 1 - data.observed)


@pytest.mark.slow
def test_implicitrm_and_causalrm_beat_naive_under_strong_propensity_bias():
    """ImplicitRM on an implicit log, CausalRM on an observational one: each beats naive on AUC by
    at least 0.05 against the true preferences; the oracle beats every one of them."""
    settings = {
        "implicit": SimulationConfig(num_rows=12_000, seed=0),
        "observational": SimulationConfig(
            num_rows=12_000, seed=0, setting="observational", observation_rate=0.2, eps0=0.1, eps1=0.2
        ),
    }
    train_config = dict(inference="fused", max_epochs=40, progress=False)
    aucs = {}
    for setting, config in settings.items():
        train, test = simulate(config), simulate(SimulationConfig(**{**config.__dict__, "seed": 1}))
        for method in ("naive", "implicitrm", "causalrm", "oracle"):
            reward = fit(train, TrainConfig(method=method, **train_config)).reward_model
            aucs[setting, method] = auc(test.truth.preference, reward.score(test.embeddings, test.context))
    assert aucs["implicit", "implicitrm"] > aucs["implicit", "naive"] + 0.05, aucs
    assert aucs["observational", "causalrm"] > aucs["observational", "naive"] + 0.05, aucs
    for setting in settings:
        assert aucs[setting, "oracle"] > max(
            v for (s, m), v in aucs.items() if s == setting and m != "oracle"
        )
