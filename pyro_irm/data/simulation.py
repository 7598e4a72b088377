"""Simulated implicit feedback with known preference, propensity and group (docs/method.md).

Two entry points share one observation process:

* :func:`simulate` draws synthetic embeddings and a true reward over them (no text at all);
* :func:`simulate_from_scores` takes any ``(embedding, true score)`` table, for example responses
  with annotator scores, and derives the preference from the score (semi-synthetic).

Propensity forms (``SimulationConfig.propensity_form``):

* ``"logistic"``: ``logit P(o=1) = b + feature_strength * z_o(e) + preference_bias * r
  - context_strength * position``, where ``z_o`` is a standardized direction of the embedding that
  is independent of the preference (a "code block" that draws copies whatever its quality), the
  position a context column (``FeedbackData.context``) that only propensity depends on, and ``b``
  is solved so that the mean observation rate is ``observation_rate``;
* ``"alpha_power"``: the seed papers' form: the score is rescaled to ``l'`` in [1, 5],
  ``pi0 = alpha ** (5 - l')``, all ``pi0`` are scaled by one constant so that the mean observation
  rate is ``observation_rate``, then capped at 1. Here propensity depends on preference strength.

The action is ``y ~ Bernoulli(o * (r * (1 - eps1) + (1 - r) * eps0))``.

Settings (``SimulationConfig.setting``): ``"implicit"`` (ImplicitRM's: only y is logged, o is
latent) or ``"observational"`` (CausalRM's: o is logged too, as ``FeedbackData.observed``, and y
is the feedback value, flipped with rates ``eps1 = P(y=0 | r=1)`` and
``eps0 = P(y=1 | r=0)`` where feedback was given), or ``"chatlog"``: a chat product's
several channels, users and a few labels (:mod:`pyro_irm.data.chatlog_simulation`, which
:func:`simulate` hands the rows to with its default :class:`~pyro_irm.data.chatlog_simulation.ChatLogConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from pyro_irm.data.config import SimulationConfig
from pyro_irm.data.feedback import ArrayLike, FeedbackData, as_float_tensor, make_truth
from pyro_irm.data.world import (
    offset_for_rate,
    orthonormal_directions,
    scale_to_rate,
    standardize,
    synthetic_truth,
)


def simulate(config: SimulationConfig | None = None) -> FeedbackData:
    """Fully synthetic rows: Gaussian embeddings, a true reward over them, and implicit actions.

    The true score is ``u_r . e + reward_nonlinearity * ((u_n . e)^2 - 1) / sqrt(2)``, scaled to
    unit variance, for fixed random orthonormal directions u; then
    ``P(r = 1) = sigmoid(preference_sharpness * (score - t))`` with ``t`` the world's
    ``1 - positive_rate`` quantile of the score.
    """
    config = config or SimulationConfig()
    if config.setting == "chatlog":
        from pyro_irm.data.chatlog_simulation import ChatLogConfig, simulate_chatlog

        return simulate_chatlog(
            config.num_rows, config.embedding_dim, ChatLogConfig(seed=config.seed), config.world_seed
        )
    embeddings, score, preference_probability, preference, projections, generator = synthetic_truth(config)
    return _observe(
        embeddings, score, preference, preference_probability, projections[:, 2], config, generator
    )


def simulate_from_scores(
    embeddings: ArrayLike,
    scores: ArrayLike,
    threshold: float,
    config: SimulationConfig | None = None,
    score_range: tuple[float, float] | None = None,
    prompt_ids: ArrayLike | None = None,
) -> FeedbackData:
    """Semi-synthetic rows: given embeddings and true quality scores, simulate implicit actions.

    Args:
        embeddings: ``(N, D)`` embeddings of real prompt and response texts.
        scores: ``(N,)`` true graded scores (HelpSteer helpfulness, UltraFeedback score, ...).
        threshold: a row is preferred when its score is above it (``r = 1{score > threshold}``).
        config: propensity form, rates and noise; ``num_rows`` and ``embedding_dim`` are ignored.
        score_range: the label scale's ``(low, high)`` for the alpha-power rescaling to [1, 5];
            defaults to the observed minimum and maximum.
        prompt_ids: optional ``(N,)`` integer prompt index, kept on the data.
    """
    config = config or SimulationConfig()
    generator = torch.Generator().manual_seed(config.seed)
    embeddings = as_float_tensor("embeddings", embeddings)
    scores = as_float_tensor("scores", scores).reshape(-1)
    if scores.shape[0] != embeddings.shape[0]:
        raise ValueError(f"scores: {scores.shape[0]} rows but embeddings has {embeddings.shape[0]}")
    if not torch.isfinite(scores).all():
        row = (~torch.isfinite(scores)).nonzero()[0, 0].item()
        raise ValueError(f"scores: row {row} is {scores[row].item()}; scores must be finite")
    preference = (scores > threshold).float()
    world = torch.Generator().manual_seed(config.world_seed)
    direction = orthonormal_directions(embeddings.shape[1], 1, world)[:, 0]
    centred = embeddings - embeddings.mean(dim=0)
    feature = standardize(centred @ direction)
    data = _observe(
        embeddings, scores, preference, preference.clone(), feature, config, generator, score_range
    )
    return data if prompt_ids is None else replace(data, prompt_ids=prompt_ids)


@dataclass(frozen=True)
class SimulatedActions:
    """Engagement and action drawn for rows of known preference; every field is ``(N,)`` float32
    except ``context``, the ``(N, 1)`` standardized display position (or None)."""

    engagement: torch.Tensor
    propensity_probability: torch.Tensor
    actions: torch.Tensor
    context: torch.Tensor | None
    positions: torch.Tensor | None


def simulate_actions(
    score: torch.Tensor,
    preference: torch.Tensor,
    propensity_feature: torch.Tensor,
    config: SimulationConfig,
    generator: torch.Generator,
    score_range: tuple[float, float] | None = None,
) -> SimulatedActions:
    """Draw propensity ``o`` and action ``y`` for rows whose preference ``r`` is known.

    Args:
        score: ``(N,)`` graded true score (used by the alpha-power form).
        preference: ``(N,)`` true preference r in {0, 1}.
        propensity_feature: ``(N,)`` standardized response feature that drives the logistic form.
    """
    num_rows = score.shape[0]
    context = positions = None
    if config.propensity_form == "alpha_power":
        low, high = score_range if score_range is not None else (score.min().item(), score.max().item())
        graded = 1.0 + 4.0 * (score - low) / max(high - low, 1e-12)
        base = config.alpha ** (5.0 - graded.clamp(1.0, 5.0))
        propensity_probability = scale_to_rate(base, config.observation_rate)
    else:
        logits = config.feature_strength * propensity_feature + config.preference_bias * preference
        if config.has_context:
            positions = torch.randint(config.num_positions, (num_rows,), generator=generator).float()
            position = standardize(positions) if positions.std() > 0 else positions * 0
            logits = logits - config.context_strength * position
            context = position[:, None]
        propensity_probability = torch.sigmoid(logits + offset_for_rate(logits, config.observation_rate))
    propensity = torch.bernoulli(propensity_probability, generator=generator)
    action_probability = propensity * (preference * (1.0 - config.eps1) + (1.0 - preference) * config.eps0)
    actions = torch.bernoulli(action_probability, generator=generator)
    return SimulatedActions(propensity, propensity_probability, actions, context, positions)


def _observe(
    embeddings: torch.Tensor,
    score: torch.Tensor,
    preference: torch.Tensor,
    preference_probability: torch.Tensor,
    propensity_feature: torch.Tensor,
    config: SimulationConfig,
    generator: torch.Generator,
    score_range: tuple[float, float] | None = None,
) -> FeedbackData:
    """Simulated actions for embedded rows, packed with their truth."""
    drawn = simulate_actions(score, preference, propensity_feature, config, generator, score_range)
    truth = make_truth(
        preference, drawn.engagement, preference_probability, drawn.propensity_probability, score
    )
    observed = drawn.engagement if config.setting == "observational" else None
    return FeedbackData(
        embeddings=embeddings,
        actions=drawn.actions,
        context=drawn.context,
        truth=truth,
        observed=observed,
        context_names=None if drawn.context is None else ("position",),
    )
