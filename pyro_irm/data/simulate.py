"""Simulated implicit feedback with known preference, propensity and group (METHOD.md).

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
is the feedback value, flipped with rates ``eps1 = rho01 = P(y=0 | r=1)`` and
``eps0 = rho10 = P(y=1 | r=0)`` where feedback was given), or ``"chatlog"``: a chat product's
several channels, users and a few labels (:mod:`pyro_irm.data.chatlog`, which
:func:`simulate` hands the rows to with its default :class:`~pyro_irm.data.chatlog.ChatLogConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch

from pyro_irm.data.feedback import ArrayLike, FeedbackData, as_float_tensor, make_truth

PropensityForm = Literal["logistic", "alpha_power"]
Setting = Literal["implicit", "observational", "chatlog"]


@dataclass(frozen=True)
class SimulationConfig:
    """How implicit feedback is generated. Defaults give strong propensity bias (a response feature
    and the display position drive P(o=1), independently of preference) at a 50% observation rate,
    on 32-dim synthetic embeddings.

    ``world_seed`` fixes the true reward and propensity directions; ``seed`` fixes the rows drawn
    from that world, so two data sets with the same ``world_seed`` share one truth (train and test).
    """

    num_rows: int = 20_000
    embedding_dim: int = 32
    positive_rate: float = 0.5
    preference_sharpness: float = 4.0
    reward_nonlinearity: float = 0.5
    propensity_form: PropensityForm = "logistic"
    observation_rate: float = 0.5
    feature_strength: float = 2.0
    preference_bias: float = 0.0
    context_strength: float = 1.5
    num_positions: int = 5
    alpha: float = 0.5
    eps0: float = 0.0
    eps1: float = 0.0
    seed: int = 0
    world_seed: int = 0
    setting: Setting = "implicit"

    def __post_init__(self) -> None:
        if self.setting not in ("implicit", "observational", "chatlog"):
            raise ValueError(
                f"setting must be 'implicit', 'observational' or 'chatlog', got {self.setting!r}"
            )
        if self.num_rows < 1:
            raise ValueError(f"num_rows must be at least 1, got {self.num_rows}")
        if self.embedding_dim < 3:
            raise ValueError(f"embedding_dim must be at least 3, got {self.embedding_dim}")
        for name in ("positive_rate", "observation_rate"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {value}")
        for name in ("eps0", "eps1"):
            value = getattr(self, name)
            if not 0.0 <= value < 0.5:
                raise ValueError(f"{name} must lie in [0, 0.5), got {value}")
        if self.eps0 + self.eps1 >= 1.0:
            raise ValueError("eps0 + eps1 must be below 1 for the action to carry information")
        if self.propensity_form not in ("logistic", "alpha_power"):
            raise ValueError(
                f"propensity_form must be 'logistic' or 'alpha_power', got {self.propensity_form!r}"
            )
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in (0, 1], got {self.alpha}")
        if self.num_positions < 1:
            raise ValueError(f"num_positions must be at least 1, got {self.num_positions}")
        if self.preference_sharpness <= 0:
            raise ValueError(f"preference_sharpness must be positive, got {self.preference_sharpness}")

    @property
    def has_context(self) -> bool:
        return self.propensity_form == "logistic" and self.context_strength != 0.0 and self.num_positions > 1


def simulate(config: SimulationConfig | None = None) -> FeedbackData:
    """Fully synthetic rows: Gaussian embeddings, a true reward over them, and implicit actions.

    The true score is ``u_r . e + reward_nonlinearity * ((u_n . e)^2 - 1) / sqrt(2)``, scaled to
    unit variance, for fixed random orthonormal directions u; then
    ``P(r = 1) = sigmoid(preference_sharpness * (score - t))`` with ``t`` the world's
    ``1 - positive_rate`` quantile of the score.
    """
    config = config or SimulationConfig()
    if config.setting == "chatlog":
        from pyro_irm.data.chatlog import ChatLogConfig, simulate_chatlog

        return simulate_chatlog(
            config.num_rows, config.embedding_dim, ChatLogConfig(seed=config.seed), config.world_seed
        )
    world = torch.Generator().manual_seed(config.world_seed)
    directions = _orthonormal_directions(config.embedding_dim, 3, world)
    generator = torch.Generator().manual_seed(config.seed)
    embeddings = torch.randn(config.num_rows, config.embedding_dim, generator=generator)
    projections = embeddings @ directions  # (N, 3): preference, nonlinearity, propensity feature
    score = _true_score(projections[:, 0], projections[:, 1], config.reward_nonlinearity)
    # The threshold belongs to the world, not to the sample: the 1 - positive_rate quantile of the
    # score under the embedding distribution, so every sample drawn from one world shares it.
    reference = torch.randn(2, 200_000, generator=world)
    threshold = torch.quantile(
        _true_score(reference[0], reference[1], config.reward_nonlinearity),
        1.0 - config.positive_rate,
    )
    preference_probability = torch.sigmoid(config.preference_sharpness * (score - threshold))
    preference = torch.bernoulli(preference_probability, generator=generator)
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
    direction = _orthonormal_directions(embeddings.shape[1], 1, world)[:, 0]
    centred = embeddings - embeddings.mean(dim=0)
    feature = standardize(centred @ direction)
    data = _observe(
        embeddings, scores, preference, preference.clone(), feature, config, generator, score_range
    )
    return data if prompt_ids is None else replace(data, prompt_ids=prompt_ids)


@dataclass(frozen=True)
class SimulatedActions:
    """Propensity and action drawn for rows of known preference; every field is ``(N,)`` float32
    except ``context``, the ``(N, 1)`` standardized display position (or None)."""

    propensity: torch.Tensor
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
        propensity_probability = _scale_to_rate(base, config.observation_rate)
    else:
        logits = config.feature_strength * propensity_feature + config.preference_bias * preference
        if config.has_context:
            positions = torch.randint(config.num_positions, (num_rows,), generator=generator).float()
            position = standardize(positions) if positions.std() > 0 else positions * 0
            logits = logits - config.context_strength * position
            context = position[:, None]
        propensity_probability = torch.sigmoid(logits + _offset_for_rate(logits, config.observation_rate))
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
        preference, drawn.propensity, preference_probability, drawn.propensity_probability, score
    )
    observed = drawn.propensity if config.setting == "observational" else None
    return FeedbackData(
        embeddings=embeddings, actions=drawn.actions, context=drawn.context, truth=truth, observed=observed
    )


def _true_score(linear: torch.Tensor, quadratic: torch.Tensor, nonlinearity: float) -> torch.Tensor:
    """Unit-variance score from two independent N(0, 1) coordinates of the embedding."""
    return (linear + nonlinearity * (quadratic**2 - 1) / math.sqrt(2)) / math.sqrt(1 + nonlinearity**2)


def _orthonormal_directions(dim: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``(dim, count)`` random orthonormal columns."""
    gaussian = torch.randn(dim, count, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(gaussian)
    return q.to(torch.float32)


def standardize(values: torch.Tensor) -> torch.Tensor:
    return (values - values.mean()) / values.std().clamp_min(1e-12)


def _offset_for_rate(logits: torch.Tensor, rate: float, iterations: int = 80) -> float:
    """The constant ``b`` with ``mean(sigmoid(logits + b)) == rate``, by bisection."""
    low, high = -50.0, 50.0
    logits = logits.double()
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        if torch.sigmoid(logits + mid).mean().item() < rate:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def _scale_to_rate(base: torch.Tensor, rate: float, iterations: int = 80) -> torch.Tensor:
    """``min(c * base, 1)`` with the one constant ``c`` giving mean ``rate`` (the papers' rescaling)."""
    low, high = -60.0, 60.0  # bisection on log c
    base = base.double()
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        if (math.exp(mid) * base).clamp(max=1.0).mean().item() < rate:
            low = mid
        else:
            high = mid
    return (math.exp(0.5 * (low + high)) * base).clamp(max=1.0).float()
