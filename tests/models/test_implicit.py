"""Exact identities of the four-group model, in float64."""

import pyro
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro.infer import TraceEnum_ELBO, config_enumerate

from pyro_irm import ModelConfig
from pyro_irm.inference.objectives import heldout_elbo
from pyro_irm.models import EmptyGuide, ImplicitFeedbackModel, StratificationGuide
from pyro_irm.models.base import Rows

GROUPS = ("engaged_positive", "silent_positive", "engaged_negative", "silent_negative")


def _model(config, embedding_dim=4, context_dim=2, seed=0):
    torch.manual_seed(seed)
    return ImplicitFeedbackModel(embedding_dim, context_dim, config).double()


def _batch(n=7, embedding_dim=4, context_dim=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(n, embedding_dim, generator=generator, dtype=torch.float64)
    context = torch.randn(n, context_dim, generator=generator, dtype=torch.float64)
    actions = torch.tensor([1, 0, 0, 1, 0, 1, 0], dtype=torch.float64)[:n]
    return embeddings, actions, context


def _hand_log_likelihood(model, embeddings, actions, context, eps0, eps1):
    """log p(y | e) = log sum_{r,o} p(r) p(o | r) p(y | r, o), written out with sigmoids."""
    with torch.no_grad():
        s_f = torch.sigmoid(model.reward_logits(embeddings, context))
        g = model.propensity_logits(embeddings, context)
        s_g0, s_g1 = torch.sigmoid(g[:, 0]), torch.sigmoid(g[:, 1])
    p_action = s_f * s_g1 * (1 - eps1) + (1 - s_f) * s_g0 * eps0
    return torch.where(actions.bool(), p_action.log(), (1 - p_action).log())


def _enumerated_elbo(model, embeddings, actions, context):
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.loss(config_enumerate(model, default="parallel"), EmptyGuide(), embeddings, actions, context)
    return -torch.tensor(loss, dtype=torch.float64)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(),
        ModelConfig(propensity_depends_on_preference=True),
        ModelConfig(eps0=0.05, eps1=0.2, propensity_depends_on_preference=True),
        ModelConfig(propensity_features="context"),
        ModelConfig(propensity_features="embedding"),
    ],
    ids=["paper", "depends-on-r", "noisy", "context-only", "embedding-only"],
)
def test_enumerated_elbo_equals_hand_computed_log_likelihood(config):
    model = _model(config)
    embeddings, actions, context = _batch()
    hand = _hand_log_likelihood(model, embeddings, actions, context, config.eps0, config.eps1)
    enumerated = _enumerated_elbo(model, embeddings, actions, context)
    assert torch.allclose(enumerated, hand.sum(), rtol=0, atol=1e-10)
    fused = model.log_marginal(embeddings, actions, context)
    assert torch.allclose(fused, hand, rtol=0, atol=1e-12)


def test_minibatch_elbo_is_scaled_to_the_data():
    model = _model(ModelConfig())
    embeddings, actions, context = _batch()
    batch = torch.tensor([1, 4])
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.loss(
        config_enumerate(model, default="parallel"),
        EmptyGuide(),
        embeddings,
        actions,
        context,
        batch,
        num_rows=70,
    )
    loss = torch.tensor(loss, dtype=torch.float64)
    hand = _hand_log_likelihood(model, embeddings, actions, context, 0.0, 0.0)[batch]
    assert torch.allclose(-loss, hand.sum() * 70 / 2, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    reward=st.floats(-6, 6),
    propensity=st.floats(-6, 6),
    eps0=st.floats(0, 0.45),
    eps1=st.floats(0, 0.45),
)
def test_closed_form_matches_the_group_table(reward, propensity, eps0, eps1):
    """With constant heads, log p(y) and the posterior follow from the 2 x 2 table by hand."""
    model = _model(ModelConfig(eps0=eps0, eps1=eps1))
    for head, value in ((model.reward_net, reward), (model.propensity.net, propensity)):
        torch.nn.init.zeros_(head[-1].weight)
        torch.nn.init.constant_(head[-1].bias, value)
    embeddings, actions, context = _batch(n=2)
    s_f = torch.sigmoid(torch.tensor(reward, dtype=torch.float64))
    s_g = torch.sigmoid(torch.tensor(propensity, dtype=torch.float64))
    joint_y1 = torch.stack([s_f * s_g * (1 - eps1), 0 * s_f, (1 - s_f) * s_g * eps0, 0 * s_f])
    prior = torch.stack([s_f * s_g, s_f * (1 - s_g), (1 - s_f) * s_g, (1 - s_f) * (1 - s_g)])
    joint_y0 = prior - joint_y1
    with torch.no_grad():
        posterior = model.posterior_groups(embeddings, actions, context)
        marginal = model.log_marginal(embeddings, actions, context)
    for row, joint in ((0, joint_y1), (1, joint_y0)):
        assert torch.allclose(marginal[row], joint.sum().log().double(), atol=1e-9)
        expected = (joint / joint.sum()).double()
        assert torch.allclose(posterior[row], expected, atol=1e-9)


def test_posterior_of_silent_rows_is_the_papers_formula():
    """The seed paper's closed form: P(r=1, o=0 | y=0) = s_f (1 - s_g) / (1 - s_f s_g), and so on."""
    model = _model(ModelConfig())
    embeddings, _, context = _batch()
    actions = torch.zeros(len(embeddings), dtype=torch.float64)
    with torch.no_grad():
        posterior = model.posterior_groups(embeddings, actions, context)
        s_f = torch.sigmoid(model.reward_logits(embeddings, context))
        s_g = torch.sigmoid(model.propensity_logits(embeddings, context)[:, 0])
    denominator = 1 - s_f * s_g
    expected = (
        torch.stack([torch.zeros_like(s_f), s_f * (1 - s_g), (1 - s_f) * s_g, (1 - s_f) * (1 - s_g)], -1)
        / denominator[:, None]
    )
    assert torch.allclose(posterior, expected, atol=1e-12)


def test_guide_side_enumeration_equals_the_closed_form_elbo():
    """The amortized ELBO summed over the guide's four groups, by Pyro and by hand."""
    config = ModelConfig(eps0=0.05, eps1=0.1)
    model = _model(config)
    guide = StratificationGuide(model, enumerate_groups=True).double()
    embeddings, actions, context = _batch()
    loss = torch.tensor(
        TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, embeddings, actions, context),
        dtype=torch.float64,
    )
    with torch.no_grad():
        hand = heldout_elbo(model, guide, Rows(embeddings, actions, context), torch.arange(7))
        exact = model.log_marginal(embeddings, actions, context).mean().item()
    assert abs(-loss.item() / 7 - hand) < 1e-10
    assert hand < exact  # an ELBO bounds the log-likelihood from below


def test_elbo_bound_is_tight_at_the_exact_posterior():
    config = ModelConfig()
    model = _model(config)
    guide = StratificationGuide(model).double()
    embeddings, actions, context = _batch()
    # Make the guide's logits the model's log joint: then q is the exact posterior.
    guide.group_logits = lambda e, y, c, o=None: model.group_log_joint(e, y, c, o)
    with torch.no_grad():
        bound = heldout_elbo(model, guide, Rows(embeddings, actions, context), torch.arange(7))
        exact = model.log_marginal(embeddings, actions, context).mean().item()
    assert abs(bound - exact) < 1e-10


def test_forward_samples_all_three_sites_and_respects_the_channel():
    model = _model(ModelConfig())
    embeddings, _, context = _batch()
    trace = pyro.poutine.trace(model).get_trace(embeddings, None, context)
    r, o, y = (trace.nodes[name]["value"] for name in ("preference", "engagement", "action"))
    assert torch.equal(y, r * o)


def test_context_only_propensity_needs_context():
    with pytest.raises(ValueError, match="propensity_features='context' needs context columns"):
        ImplicitFeedbackModel(4, 0, ModelConfig(propensity_features="context"))
