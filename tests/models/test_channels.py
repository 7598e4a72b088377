"""The multi-channel model with users and labels: exact identities in float64, sign constraints,
and the seed paper's model as its special case."""

import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import TraceEnum_ELBO, config_enumerate

from pyro_irm import ModelConfig, SimulationConfig, TrainConfig, fit, simulate
from pyro_irm.channels import ChannelSpec
from pyro_irm.models import ImplicitFeedbackModel
from pyro_irm.models.channel import SILENT_LOGIT, LogNormalChannel, SignedBinaryChannel
from pyro_irm.models.guides import EmptyGuide, GlobalGuide, ModelGuide

CHANNELS = (
    ChannelSpec("copied"),
    ChannelSpec("thumbs_up"),
    ChannelSpec("regenerated", "negative"),
    ChannelSpec("dwell_seconds", kind="continuous"),
)


def _randomized_model(num_users=3, label_noise=0.1, features="context"):
    torch.manual_seed(1)
    config = ModelConfig(
        reward_hidden=(5,),
        propensity_hidden=(4,),
        channel_features=features,
        user_scale=0.7,
        label_noise=label_noise,
        propensity_depends_on_preference=True,
    )
    model = ImplicitFeedbackModel(3, 2, config, CHANNELS, num_users=num_users).double()
    with torch.no_grad():  # move every parameter and global latent off its initial value
        for parameter in [*model.parameters(), *model.point_globals.buffers()]:
            parameter.add_(0.5 * torch.randn_like(parameter))
    return model


def _batch():
    torch.manual_seed(2)
    embeddings = torch.randn(6, 3, dtype=torch.float64)
    context = torch.randn(6, 2, dtype=torch.float64)
    actions = torch.tensor(
        [
            [1, 0, 0, 12.0],
            [0, 0, 1, 3.5],
            [0, 0, 0, 40.0],
            [1, 1, 0, 0.0],
            [0, 0, 0, 7.0],
            [0, 1, 1, 90.0],
        ],
        dtype=torch.float64,
    )
    users = torch.tensor([0, 2, 1, -1, 0, 2])
    labels = torch.tensor([1.0, math.nan, 0.0, math.nan, math.nan, 1.0], dtype=torch.float64)
    return embeddings, actions, context, users, labels


def _by_hand(model, embeddings, actions, context, users, labels):
    """``sum_i log sum_{r,o} p(r) p(o | r, u) prod_k p(y_k | r, o) p(label | r) + log p(u)``, written
    from the parameters alone."""
    f = model.reward_net(embeddings).squeeze(-1)
    g = model.propensity.net(torch.cat([embeddings, context], -1))  # (B, 2): r = 0, r = 1
    effects = torch.cat([model.user_effect, torch.zeros(1, dtype=torch.float64)])
    u = effects[torch.where(users < 0, torch.full_like(users, model.num_users), users)]
    noise = model.config.label_noise
    total = torch.zeros((), dtype=torch.float64)
    for i in range(embeddings.shape[0]):
        terms = []
        for r in (0, 1):
            for o in (0, 1):
                term = F.logsigmoid(f[i]) if r else F.logsigmoid(-f[i])
                logit_o = g[i, r] + u[i]
                term = term + (F.logsigmoid(logit_o) if o else F.logsigmoid(-logit_o))
                for k, channel in enumerate(model.channels):
                    y = actions[i, k]
                    signed = r if channel.spec.sign > 0 else 1 - r
                    if isinstance(channel, SignedBinaryChannel):
                        logit = (
                            channel.intercept
                            + F.softplus(channel.raw_effect) * signed
                            + channel.features(context[i]).squeeze(-1)
                        )
                        logit = logit if o else torch.tensor(SILENT_LOGIT, dtype=torch.float64)
                        term = term + (F.logsigmoid(logit) if y == 1 else F.logsigmoid(-logit))
                    else:
                        assert isinstance(channel, LogNormalChannel)
                        location = (
                            channel.location[o]
                            + F.softplus(channel.raw_effect[o]) * signed
                            + channel.features(context[i]).squeeze(-1)
                        )
                        scale = F.softplus(channel.raw_scale[o]) + 1e-3
                        z = torch.log1p(y)
                        term = term - 0.5 * ((z - location) / scale) ** 2 - torch.log(scale)
                        term = term - 0.5 * math.log(2 * math.pi)
                if not math.isnan(labels[i]):
                    p_one = r * (1 - noise) + (1 - r) * noise
                    term = term + math.log(p_one if labels[i] == 1 else 1 - p_one)
                terms.append(term)
        total = total + torch.logsumexp(torch.stack(terms), 0)
    prior = -0.5 * (model.user_effect / 0.7) ** 2 - math.log(0.7) - 0.5 * math.log(2 * math.pi)
    return total + prior.sum()


def test_enumerated_elbo_of_channels_users_and_labels_equals_the_hand_computed_likelihood():
    model = _randomized_model()
    embeddings, actions, context, users, labels = _batch()
    expected = _by_hand(model, embeddings, actions, context, users, labels)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    guide = ModelGuide(GlobalGuide(model, "map"), EmptyGuide())  # MAP: the user effects as they are
    loss = elbo.loss(
        config_enumerate(model, default="parallel"),
        guide,
        embeddings,
        actions,
        context,
        users=users,
        labels=labels,
    )
    assert -loss == pytest.approx(expected.item(), rel=1e-10, abs=1e-10)
    # The closed form (fused path, posterior) traced from the same model.
    closed = model.log_marginal(embeddings, actions, context, users=users, labels=labels)
    assert (closed.sum() + model.global_log_prob()).item() == pytest.approx(
        expected.item(), rel=1e-10, abs=1e-10
    )


def test_labels_rule_out_the_other_preference_without_noise():
    model = _randomized_model(label_noise=0.0)
    embeddings, actions, context, users, labels = _batch()
    groups = model.posterior_groups(embeddings, actions, context, users=users, labels=labels)
    preferred = groups[:, :2].sum(-1)
    assert preferred[0] > 1 - 1e-12 and preferred[5] > 1 - 1e-12
    assert preferred[2] < 1e-12
    assert 1e-6 < preferred[1] < 1 - 1e-6  # unlabelled rows keep their doubt


def test_unseen_user_gets_the_prior_mean():
    model = _randomized_model()
    embeddings, actions, context, _, _ = _batch()
    unseen = model.log_marginal(embeddings, actions, context, users=torch.full((6,), -1))
    beyond = model.log_marginal(embeddings, actions, context, users=torch.full((6,), 99))
    without = model.log_marginal(embeddings, actions, context)
    torch.testing.assert_close(unseen, without)
    torch.testing.assert_close(beyond, without)


def test_reward_never_sees_the_user():
    model = _randomized_model()
    embeddings, *_ = _batch()
    before = model.reward_logits(embeddings, None)
    with torch.no_grad():
        model.user_effect.add_(3.0)
    torch.testing.assert_close(model.reward_logits(embeddings, None), before)


@pytest.mark.parametrize("seed", range(5))
def test_declared_polarity_holds_for_any_parameters(seed):
    torch.manual_seed(seed)
    model = _randomized_model()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(3 * torch.randn_like(parameter))
    embeddings, _, context, _, _ = _batch()
    features = model.emission_features(embeddings, context)
    engaged = torch.ones(())
    for channel in model.channels:
        liked = channel.distribution(torch.ones(()), engaged, features)
        disliked = channel.distribution(torch.zeros(()), engaged, features)
        difference = liked.mean - disliked.mean
        if channel.spec.sign > 0:
            assert (difference >= 0).all(), channel.spec
        else:
            assert (difference <= 0).all(), channel.spec


def test_silent_rows_fire_no_binary_channel():
    model = _randomized_model()
    embeddings, _, context, _, _ = _batch()
    features = model.emission_features(embeddings, context)
    for channel in model.channels[:3]:
        silent = channel.distribution(torch.ones(()), torch.zeros(()), features)
        assert (silent.probs < 1e-12).all()


def test_one_positive_channel_is_the_seed_papers_model():
    """With one channel, no users and no labels: y = r AND o, P(y=1) = sigmoid(f) sigmoid(g)."""
    torch.manual_seed(0)
    model = ImplicitFeedbackModel(3, 0, ModelConfig(reward_hidden=(4,), propensity_hidden=(4,))).double()
    embeddings = torch.randn(8, 3, dtype=torch.float64)
    actions = torch.tensor([1, 0, 0, 1, 0, 1, 0, 0], dtype=torch.float64)
    f = model.reward_net(embeddings).squeeze(-1)
    g = model.propensity.net(embeddings).squeeze(-1)
    acted = F.logsigmoid(f) + F.logsigmoid(g)
    expected = torch.where(actions == 1, acted, torch.log1p(-acted.exp()))
    torch.testing.assert_close(model.log_marginal(embeddings, actions), expected, atol=1e-12, rtol=0)
    assert model.sites == ("action",)


# Rewards of the first rows after a 3-epoch fit of each inference mode, computed by the code before
# channels, users and labels existed (same seed, same data): the special case is not a regression.
_BEFORE_CHANNELS = {
    "enumerate": [0.985407, -2.060919, -1.303861, 0.425212],
    "fused": [0.985407, -2.060918, -1.303861, 0.425212],
    "amortized": [0.455384, -1.217906, -1.094205, -0.085287],
}


@pytest.mark.parametrize("inference", sorted(_BEFORE_CHANNELS))
def test_seed_paper_fits_equal_the_fits_before_channels(inference):
    pyro.set_rng_seed(0)
    data = simulate(SimulationConfig(num_rows=600, embedding_dim=8, seed=3))
    config = TrainConfig(inference=inference, max_epochs=3, batch_size=128, progress=False)
    result = fit(data, config)
    rewards = result.reward_model.score(data.embeddings[:4])
    torch.testing.assert_close(rewards, torch.tensor(_BEFORE_CHANNELS[inference]), atol=2e-6, rtol=0)


def test_unbiasedness_study_posterior_is_the_models():
    from pyro_irm.analysis.unbiasedness import silent_preference_posterior

    torch.manual_seed(3)
    model = ImplicitFeedbackModel(3, 0, ModelConfig(reward_hidden=(4,), propensity_hidden=(4,))).double()
    embeddings = torch.randn(10, 3, dtype=torch.float64)
    silent = torch.zeros(10, dtype=torch.float64)
    from_model = model.posterior_groups(embeddings, silent)[:, :2].sum(-1)
    prior = torch.sigmoid(model.reward_net(embeddings).squeeze(-1))
    propensity = torch.sigmoid(model.propensity.net(embeddings).squeeze(-1))
    torch.testing.assert_close(silent_preference_posterior(prior, propensity), from_model, atol=1e-12, rtol=0)
