"""Each estimator as it is wired into its objective (``LossObjective.risk``), on a world where its
assumption holds: over replicate draws of who gives feedback (and of flips), the mean of its risk
equals the risk of the true preferences on every row, within Monte-Carlo error, while a wrong
ingredient (no weights, a wrong propensity and a wrong imputation, no noise correction) is off by
many standard errors. A mutation of the wiring (DR reduced to IPS, weights dropped, the correction of
flips skipped) moves a right ingredient's mean off the target and fails these tests.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pyro_irm import FeedbackData
from pyro_irm.estimators import build_model
from pyro_irm.estimators.risk_objective import LossObjective
from pyro_irm.inference import EstimatorConfig, Nuisance
from pyro_irm.models import ModelConfig

ROWS, DIM, REPLICATES = 3000, 6, 120
CONFIG = EstimatorConfig(propensity_clip=0.01)  # every propensity here is above 0.05: nothing is clipped


@pytest.fixture(scope="module")
def world():
    """Fixed rows and preferences; a fixed linear reward f (not the truth) whose loss varies by row;
    a propensity that rises with the first feature, which drives preference too, so that the rows
    with feedback are the rows where f's loss differs: ignoring the propensity is biased."""
    generator = np.random.default_rng(0)
    features = generator.normal(size=(ROWS, DIM)).astype(np.float32)
    truth = features @ np.array([1.5, -1.0, 0.5, 0.0, 0.8, -0.3])
    preference = (generator.random(ROWS) < 1 / (1 + np.exp(-truth))).astype(np.float32)
    propensity = (0.05 + 0.9 / (1 + np.exp(-2.0 * features[:, 0]))).astype(np.float32)
    model = build_model("ips", DIM, 0, ModelConfig(reward_hidden=()))
    with torch.no_grad():
        model.reward_net[0].weight.copy_(torch.tensor([[0.3, -1.5, 1.0, 0.7, 0.0, 0.4]]))
        model.reward_net[0].bias.fill_(0.2)
    embeddings = torch.from_numpy(features)
    with torch.no_grad():
        logits = model.reward_logits(embeddings)
    r = torch.from_numpy(preference)
    target = F.binary_cross_entropy_with_logits(logits, r).item()
    return {
        "embeddings": embeddings,
        "preference": r,
        "propensity": torch.from_numpy(propensity),
        "model": model,
        "logits": logits,
        "target": target,
    }


def _replicate_risks(world, method, draw, nuisance_of, config=CONFIG):
    """Risks over replicates: ``draw(generator) -> FeedbackData``, ``nuisance_of(data) -> Nuisance``."""
    generator = np.random.default_rng(1)
    risks = []
    for _ in range(REPLICATES):
        data = draw(generator)
        objective = LossObjective(
            method, world["model"], data, data.actions, nuisance_of(data), config, torch.arange(ROWS)
        )
        with torch.no_grad():
            risks.append(objective.risk(torch.arange(ROWS))[1].item())
    risks = np.array(risks)
    return risks.mean(), risks.std(ddof=1) / np.sqrt(len(risks))


def _observed_draw(world, eps1=0.0, eps0=0.0):
    def draw(generator):
        observed = torch.from_numpy((generator.random(ROWS) < world["propensity"].numpy()).astype(np.float32))
        r = world["preference"]
        flip = torch.from_numpy(generator.random(ROWS).astype(np.float32))
        value = torch.where(r == 1, (flip >= eps1).float(), (flip < eps0).float())
        return FeedbackData(
            embeddings=world["embeddings"],
            actions=value * observed,
            observed=observed,
            propensity=world["propensity"],
        )

    return draw


def _implicit_draw(world, propensity=None):
    propensity = world["propensity"] if propensity is None else propensity

    def draw(generator):
        acted = (generator.random(ROWS) < propensity.numpy()).astype(np.float32)
        return FeedbackData(
            embeddings=world["embeddings"], actions=world["preference"] * torch.from_numpy(acted)
        )

    return draw


def _assert_unbiased(world, mean, standard_error):
    assert abs(mean - world["target"]) < 4 * standard_error + 1e-4, (mean, world["target"], standard_error)


def _assert_biased(world, mean, standard_error):
    assert abs(mean - world["target"]) > 8 * standard_error, (mean, world["target"], standard_error)


@pytest.mark.parametrize("method", ["ips", "snips"])
def test_ips_with_the_true_propensity_is_unbiased_and_without_weights_is_not(world, method):
    given = lambda data: Nuisance(propensity=world["propensity"])  # noqa: E731
    _assert_unbiased(world, *_replicate_risks(world, method, _observed_draw(world), given))
    flat = lambda data: Nuisance(propensity=torch.full((ROWS,), 0.5))  # noqa: E731
    _assert_biased(world, *_replicate_risks(world, method, _observed_draw(world), flat))


def test_dr_is_unbiased_when_either_the_propensity_or_the_imputation_is_right(world):
    # P(y = 1 | row) of an observed row is P(r = 1 | row); with r fixed per row, r itself.
    right_imputation = world["preference"]
    wrong_propensity = torch.full((ROWS,), 0.5)
    wrong_imputation = torch.full((ROWS,), 0.3)
    cases = {
        "right imputation, wrong propensity": Nuisance(
            propensity=wrong_propensity, imputation=right_imputation
        ),
        "wrong imputation, right propensity": Nuisance(
            propensity=world["propensity"], imputation=wrong_imputation
        ),
    }
    for name, nuisance in cases.items():
        mean, error = _replicate_risks(world, "dr", _observed_draw(world), lambda data, n=nuisance: n)
        assert abs(mean - world["target"]) < 4 * error + 1e-4, (name, mean, world["target"], error)
    both_wrong = Nuisance(propensity=wrong_propensity, imputation=wrong_imputation)
    _assert_biased(world, *_replicate_risks(world, "dr", _observed_draw(world), lambda data: both_wrong))


def test_causalrm_corrects_flips_and_weights_by_the_propensity(world):
    eps1, eps0 = 0.2, 0.1
    draw = _observed_draw(world, eps1, eps0)
    right = lambda data: Nuisance(propensity=world["propensity"], eps1=eps1, eps0=eps0)  # noqa: E731
    _assert_unbiased(world, *_replicate_risks(world, "causalrm", draw, right))
    uncorrected = lambda data: Nuisance(propensity=world["propensity"], eps1=0.0, eps0=0.0)  # noqa: E731
    _assert_biased(world, *_replicate_risks(world, "causalrm", draw, uncorrected))


@pytest.mark.parametrize("method", ["ips", "relmf"])
def test_implicit_ips_and_relmf_with_the_true_propensity_are_unbiased(world, method):
    def given(data):
        return Nuisance(propensity=world["propensity"], relative_propensity=world["propensity"])

    _assert_unbiased(world, *_replicate_risks(world, method, _implicit_draw(world), given))

    def flat(data):
        constant = torch.full((ROWS,), float(world["propensity"].mean()))
        return Nuisance(propensity=constant, relative_propensity=constant)

    _assert_biased(world, *_replicate_risks(world, method, _implicit_draw(world), flat))


@pytest.mark.parametrize("method", ["upu", "nnpu"])
def test_pu_risks_are_unbiased_when_positives_are_labelled_at_random(world, method):
    scar = torch.full((ROWS,), 0.4)  # labelling does not depend on the row
    prior = float(world["preference"].mean())
    mean, error = _replicate_risks(
        world, method, _implicit_draw(world, scar), lambda data: Nuisance(class_prior=prior)
    )
    _assert_unbiased(world, mean, error)
    # A wrong class prior (the share of positives among all rows) moves the risk off the target.
    wrong = lambda data: Nuisance(class_prior=prior - 0.2)  # noqa: E731
    _assert_biased(world, *_replicate_risks(world, method, _implicit_draw(world, scar), wrong))


def test_ubpr_is_unbiased_for_the_pairwise_risk_of_the_true_preferences(world):
    prompts = torch.arange(ROWS) // 4  # four rows per prompt
    draw_implicit = _implicit_draw(world)

    def draw(generator):
        data = draw_implicit(generator)
        return FeedbackData(embeddings=data.embeddings, actions=data.actions, prompt_ids=prompts)

    given = lambda data: Nuisance(propensity=world["propensity"])  # noqa: E731
    # The risk draws each row's partner with a generator seeded the same way every replicate, so the
    # pairs are fixed: the target is their loss weighted by r_i (1 - r_j).
    objective = LossObjective("ubpr", world["model"], draw(np.random.default_rng(5)), world["preference"],
                              given(None), CONFIG, torch.arange(ROWS))  # fmt: skip
    seed = 11
    partners = objective._partners["train"].sample(torch.arange(ROWS), torch.Generator().manual_seed(seed))
    r, logits = world["preference"], world["logits"]
    target = (-(r * (1 - r[partners])) * F.logsigmoid(logits - logits[partners])).mean().item()

    generator = np.random.default_rng(1)
    risks = []
    for _ in range(REPLICATES):
        data = draw(generator)
        objective = LossObjective("ubpr", world["model"], data, data.actions, given(data), CONFIG,
                                  torch.arange(ROWS))  # fmt: skip
        with torch.no_grad():
            risks.append(objective.risk(torch.arange(ROWS), torch.Generator().manual_seed(seed))[1].item())
    mean, error = np.mean(risks), np.std(risks, ddof=1) / np.sqrt(REPLICATES)
    assert abs(mean - target) < 4 * error + 1e-4, (mean, target, error)


def _pu_world(rows: int, seed: int, dim: int = 40):
    """Many features, few of them informative, 30% of the positives labelled at random."""
    generator = np.random.default_rng(seed)
    features = generator.normal(size=(rows, dim)).astype(np.float32)
    weights = np.zeros(dim)
    weights[:5] = [1.5, -1.0, 1.0, 0.8, -0.6]
    preference = (generator.random(rows) < 1 / (1 + np.exp(-(features @ weights)))).astype(np.float32)
    labelled = preference * (generator.random(rows) < 0.3)
    data = FeedbackData(
        embeddings=torch.from_numpy(features), actions=torch.from_numpy(labelled.astype(np.float32))
    )
    return data, preference


def test_nnpu_correction_keeps_a_flexible_network_from_overfitting_where_upu_does():
    from pyro_irm import TrainConfig, fit
    from pyro_irm.analysis.metrics import auc

    gaps = []
    for seed in range(3):
        train, _ = _pu_world(600, seed)
        test, preference = _pu_world(4000, 100 + seed)
        results = {}
        for method in ("upu", "nnpu"):
            config = TrainConfig(method=method, max_epochs=60, patience=1000, batch_size=600,
                                 validation_fraction=0.0, progress=False, seed=seed)  # fmt: skip
            result = fit(train, config, estimator_config=EstimatorConfig(class_prior=0.5))
            results[method] = result
            results[method, "auc"] = auc(preference, result.reward_model.score(test.embeddings))
        # uPU drives its training risk below zero, which no risk can be: it has overfit.
        assert min(results["upu"].history.train_loss) < -1.0
        assert min(results["nnpu"].history.train_loss) >= 0.0
        gaps.append(results["nnpu", "auc"] - results["upu", "auc"])
    assert np.mean(gaps) > 0.015, gaps


@pytest.mark.slow
def test_an_ips_risk_that_runs_away_below_zero_keeps_its_best_held_out_epoch(caplog):
    """Implicit IPS weighs l(0) by 1 - y / p, negative on acted rows, so a flexible network drives
    its training risk far below zero: overfitting, which the held-out risk sees. The fit stops
    there and keeps the best held-out epoch (as BENCHMARKS.md's sweep needs); without held-out
    rows there is no epoch to keep, and the fit refuses."""
    from pyro_irm import SimulationConfig, TrainConfig, fit, simulate
    from pyro_irm.analysis.metrics import auc
    from pyro_irm.inference.svi import FitDivergedError

    simulation = SimulationConfig(num_rows=10_000, embedding_dim=32, propensity_form="logistic",
                                  feature_strength=4.0, seed=0)  # fmt: skip
    train, test = simulate(simulation), simulate(replace(simulation, seed=1))
    config = TrainConfig(method="ips", max_epochs=40, batch_size=512, patience=40, progress=False)
    with caplog.at_level("WARNING", logger="pyro_irm"):
        result = fit(train, config)
    assert "ran away below zero" in caplog.text and result.history.stopped_early
    assert min(result.history.train_loss) > -1e3 * 0.7  # the runaway epoch itself is not kept
    assert auc(test.truth.preference, result.reward_model.score(test.embeddings)) > 0.7
    with pytest.raises(FitDivergedError, match="before any held-out epoch could be kept"):
        fit(train, replace(config, validation_fraction=0.0))
