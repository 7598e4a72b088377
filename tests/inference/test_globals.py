"""Global latents as sites of the one program: every objective and the held-out ELBO derived from it
agree for the same parameters; flip rates and a hierarchical user spread are learned."""

import math

import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_irm import ModelConfig, TrainConfig, fit
from pyro_irm.channels import ChannelSpec
from pyro_irm.data.feedback import FeedbackData
from pyro_irm.inference.objectives import FusedObjective, SVIObjective, global_draw, heldout_elbo
from pyro_irm.models import ImplicitFeedbackModel
from pyro_irm.models.base import Rows, format_sites
from pyro_irm.models.guides import EmptyGuide, GlobalGuide, ModelGuide, StratificationGuide

CHANNELS = (
    ChannelSpec("copied"),
    ChannelSpec("regenerated", "negative"),
    ChannelSpec("rater", kind="annotation"),
)


def _model_and_rows(num_rows=40, num_users=4):
    """A float64 model with every kind of global latent (a learned user scale and its effects, the
    rater's and the labels' flip rates) moved off its start, and rows with users and labels."""
    torch.manual_seed(3)
    config = ModelConfig(
        reward_hidden=(5,), propensity_hidden=(4,), learn_user_scale=True, learn_label_noise=True
    )
    model = ImplicitFeedbackModel(3, 0, config, CHANNELS, num_users=num_users).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
        values = model.point_values()
        values["user_effect"] = torch.randn(num_users, dtype=torch.float64)
        values["user_scale"] = torch.tensor(0.8, dtype=torch.float64)
        values["action_rater.eps0"] = torch.tensor(0.12, dtype=torch.float64)
        model.set_point_values(values)
    embeddings = torch.randn(num_rows, 3, dtype=torch.float64)
    actions = torch.bernoulli(torch.full((num_rows, 3), 0.4, dtype=torch.float64))
    actions[::5, 2] = math.nan  # the rater saw some rows only
    users = torch.randint(-1, num_users, (num_rows,))
    labels = torch.where(torch.rand(num_rows) < 0.3, torch.bernoulli(torch.full((num_rows,), 0.5)), math.nan)
    return model, Rows(embeddings, actions, None, None, users, labels.double())


def test_every_inference_mode_gives_the_same_heldout_elbo_for_the_same_parameters():
    model, rows = _model_and_rows()
    everything = torch.arange(len(rows))
    n = len(rows)
    point = ModelGuide(GlobalGuide(model, "map").double(), EmptyGuide())
    expected = heldout_elbo(model, point, rows, everything, num_rows=n)
    # The global term is part of it: log p(globals) per row, from the program's global part.
    rows_only = heldout_elbo(model, point, rows, everything)
    assert expected - rows_only == pytest.approx(model.global_log_prob().item() / n, rel=1e-10)
    fused = FusedObjective(model, point, rows, n)
    assert -fused.loss_and_grads(everything, num_rows=n) == pytest.approx(expected, rel=1e-10, abs=1e-10)
    enumerated = SVIObjective(model, point, TraceEnum_ELBO(max_plate_nesting=1), True, rows, n)
    assert -enumerated.loss_and_grads(everything, num_rows=n) == pytest.approx(expected, rel=1e-10, abs=1e-10)

    # Amortized: the same global guide and a stratification guide. Summing its groups gives the
    # held-out ELBO exactly; sampling them (Trace_ELBO) gives it within Monte Carlo error.
    amortized = ModelGuide(point.globals_guide, StratificationGuide(model).double())
    exact = heldout_elbo(model, amortized, rows, everything, num_rows=n)
    summed = SVIObjective(model, amortized, TraceEnum_ELBO(max_plate_nesting=1), False, rows, n)
    assert -summed.loss_and_grads(everything, num_rows=n) == pytest.approx(exact, rel=1e-10, abs=1e-10)
    assert exact < expected  # the guide is not the exact posterior: its ELBO lies below the likelihood
    sampling = StratificationGuide(model, enumerate_groups=False).double()
    sampling.load_state_dict(amortized.rows_guide.state_dict())  # the same q, its groups drawn
    sampled_guide = ModelGuide(point.globals_guide, sampling)
    sampled = SVIObjective(model, sampled_guide, Trace_ELBO(max_plate_nesting=1), False, rows, n)
    args, kwargs = sampled._elbo_args(everything, n)
    with torch.no_grad():
        draws = torch.tensor([-sampled.elbo.loss(*args, **kwargs) for _ in range(200)])
    standard_error = draws.std().item() / math.sqrt(len(draws))
    assert abs(draws.mean().item() - exact) < 4 * standard_error


def test_a_normal_global_guide_scores_its_own_elbo_within_monte_carlo_error():
    model, rows = _model_and_rows()
    everything, n = torch.arange(len(rows)), len(rows)
    guide = ModelGuide(GlobalGuide(model, "normal").double(), EmptyGuide())
    score = heldout_elbo(model, guide, rows, everything, num_rows=n, particles=100)
    assert score == heldout_elbo(model, guide, rows, everything, num_rows=n, particles=100)  # seeded
    fused = FusedObjective(model, guide, rows, n)
    with torch.no_grad():
        draws = torch.tensor([-fused(everything, n)[0].item() for _ in range(200)])
    # Both are Monte Carlo estimates of one ELBO: the score from 100 draws, the mean from 200.
    assert abs(draws.mean().item() - score) < 4 * draws.std().item() * math.sqrt(1 / 100 + 1 / 200)
    values, _ = global_draw(model, guide)
    assert set(values) == set(model.point_values())


def _rated_log(num_rows, eps0, eps1, seed=0):
    """Copies from engaged rows, and a rater's verdict flipped at (eps0, eps1) whatever the engagement."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(num_rows, 6, generator=generator)
    preference = torch.bernoulli(torch.sigmoid(2.0 * embeddings[:, 0]), generator=generator)
    engaged = torch.bernoulli(torch.sigmoid(embeddings[:, 1] - 0.3), generator=generator)
    copied = engaged * preference
    flip = torch.where(preference == 1, torch.full_like(preference, eps1), torch.full_like(preference, eps0))
    rater = torch.where(torch.bernoulli(flip, generator=generator) == 1, 1 - preference, preference)
    channels = (ChannelSpec("copied"), ChannelSpec("rater", kind="annotation"))
    return FeedbackData(embeddings, torch.stack([copied, rater], 1), channels=channels)


@pytest.mark.slow
def test_a_raters_flip_rates_are_learned_within_005_of_the_truth():
    data = _rated_log(6000, eps0=0.10, eps1=0.25)
    rates = {"learning_rate": 1e-2, "global_learning_rate": 5e-2}
    config = TrainConfig(max_epochs=60, batch_size=512, patience=10, seed=0, progress=False, **rates)
    # Copies as the seed paper has them (y = r AND o); a learned copy channel trades its own noise
    # for the rater's on one channel and one rater (eps1 0.17 here).
    model_config = ModelConfig(reward_hidden=(16,), propensity_hidden=(8,), channel_emission="fixed")
    result = fit(data, config, model_config)
    values = result.reward_model.model.point_values()
    assert values["action_rater.eps0"].item() == pytest.approx(0.10, abs=0.05)
    assert values["action_rater.eps1"].item() == pytest.approx(0.25, abs=0.05)


def _users_log(num_rows, num_users, spread, seed=0):
    """Three channels of one engagement, each user acting more or less (effects of sd ``spread``)."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(num_rows, 6, generator=generator)
    effects = spread * torch.randn(num_users, generator=generator)
    users = torch.randint(0, num_users, (num_rows,), generator=generator)
    preference = torch.bernoulli(torch.sigmoid(2.0 * embeddings[:, 0]), generator=generator)
    engaged = torch.bernoulli(torch.sigmoid(embeddings[:, 1] + effects[users]), generator=generator)
    thumbs = engaged * torch.bernoulli(0.15 + 0.7 * preference, generator=generator)
    copied = engaged * torch.bernoulli(0.2 + 0.6 * preference, generator=generator)
    regenerated = engaged * torch.bernoulli(0.7 - 0.6 * preference, generator=generator)
    channels = (ChannelSpec("thumbs"), ChannelSpec("copied"), ChannelSpec("regenerated", "negative"))
    data = FeedbackData(
        embeddings, torch.stack([thumbs, copied, regenerated], 1), channels=channels, users=users
    )
    return data, effects


@pytest.mark.slow
def test_a_hierarchical_user_effect_learns_the_users_spread(tmp_path):
    from pyro_irm.models import RewardModel

    data, truth = _users_log(12_000, 60, spread=1.0)
    rates = {"learning_rate": 1e-2, "global_learning_rate": 5e-2}
    config = TrainConfig(max_epochs=40, batch_size=1024, seed=0, progress=False, **rates)
    model_config = ModelConfig(reward_hidden=(16,), propensity_hidden=(8,), learn_user_scale=True)
    result = fit(data, config, model_config)
    values = result.reward_model.model.point_values()
    learned = values["user_effect"]
    assert values["user_scale"].item() == pytest.approx(truth.std().item(), rel=0.2)
    assert learned.std().item() == pytest.approx(truth.std().item(), rel=0.2)
    assert torch.corrcoef(torch.stack([learned, truth]))[0, 1] >= 0.9
    # The Normal guide's spread is kept: about 200 rows a user leave each effect a posterior sd near
    # 0.2, and the 90% intervals hold most true effects (mean-field VI is somewhat overconfident).
    effects = result.reward_model.global_posterior()["user_effect"]
    assert 0.1 < effects["sd"].mean().item() < 0.4
    inside = ((truth >= effects["q05"]) & (truth <= effects["q95"])).float().mean().item()
    assert inside >= 0.7
    assert result.reward_model.global_posterior()["user_scale"]["sd"].item() < 1e-5  # a point (MAP)
    reloaded = RewardModel.load(result.reward_model.save(tmp_path / "users")).global_posterior()
    torch.testing.assert_close(reloaded["user_effect"], effects)


def test_the_sites_print_with_their_enumeration_shapes():
    model, rows = _model_and_rows(num_rows=5)
    shapes = format_sites(model, rows)
    lines = [line.split() for line in shapes.splitlines()]
    # Globals first, without the rows' dims; then r and o over the enumeration dims.
    assert ["user_effect", "dist", "4", "|"] in lines and ["user_scale", "dist", "|"] in lines
    assert ["action_rater.eps0", "dist", "|"] in lines and ["label.eps1", "dist", "|"] in lines
    order = [line[0] for line in lines if len(line) > 1 and line[1] == "dist"]
    assert order.index("user_scale") < order.index("user_effect") < order.index("preference")
    preference = lines.index(["preference", "dist", "5", "|"])
    assert lines[preference + 1] == ["value", "2", "1", "|"]
    engagement = lines.index(["engagement", "dist", "2", "5", "|"])
    assert lines[engagement + 1] == ["value", "2", "1", "1", "|"]


def test_learned_globals_and_a_raters_channel_save_and_reload(tmp_path):
    from pyro_irm.models import RewardModel

    model, rows = _model_and_rows()
    saved = RewardModel(model.float(), "implicitrm").save(tmp_path / "model")
    loaded = RewardModel.load(saved).model
    assert type(loaded.channels[2]).__name__ == "AnnotatorChannel"
    for site, value in model.point_values().items():
        torch.testing.assert_close(loaded.point_values()[site], value)
    floats = Rows(rows.embeddings.float(), rows.actions.float(), None, None, rows.users, rows.labels.float())
    torch.testing.assert_close(floats.group_log_joint(loaded), floats.group_log_joint(model))
