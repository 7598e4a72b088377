"""The truth of a synthetic world: embeddings, a true score over them and the preference it implies
(``SimulationConfig``'s ``world_seed`` fixes the directions, ``seed`` the rows), and the small
numerical helpers every simulator shares."""

from __future__ import annotations

import math

import torch

from pyro_irm.data.config import SimulationConfig


def synthetic_truth(config: SimulationConfig):
    """Rows of the world of ``config``: ``(embeddings (N, D), score (N,), P(r = 1) (N,), r (N,),
    projections (N, 3), generator)``, where ``projections`` are the rows' coordinates along the
    preference, nonlinearity and propensity-feature directions and ``generator`` has drawn the rows
    (later draws of the same sample continue from it)."""
    world = torch.Generator().manual_seed(config.world_seed)
    directions = orthonormal_directions(config.embedding_dim, 3, world)
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
    return embeddings, score, preference_probability, preference, projections, generator


def _true_score(linear: torch.Tensor, quadratic: torch.Tensor, nonlinearity: float) -> torch.Tensor:
    """Unit-variance score from two independent N(0, 1) coordinates of the embedding."""
    return (linear + nonlinearity * (quadratic**2 - 1) / math.sqrt(2)) / math.sqrt(1 + nonlinearity**2)


def orthonormal_directions(dim: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``(dim, count)`` random orthonormal columns."""
    gaussian = torch.randn(dim, count, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(gaussian)
    return q.to(torch.float32)


def standardize(values: torch.Tensor) -> torch.Tensor:
    return (values - values.mean()) / values.std().clamp_min(1e-12)


def offset_for_rate(logits: torch.Tensor, rate: float, iterations: int = 80) -> float:
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


def scale_to_rate(base: torch.Tensor, rate: float, iterations: int = 80) -> torch.Tensor:
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
