"""Remedies for a split that the data do not decide (:mod:`pyro_irm.inference.identification`).

Three of them act on the fit, each a :class:`~pyro_irm.models.config.ModelConfig` option:

* **Erasing the context from the reward's input** (``erase_context_from_reward``): the reward
  network reads ``e P``, where ``P`` projects out the directions of the embedding along which a
  ridge regression predicts the context (linear concept erasure, as in iterative nullspace
  projection). The reward can no longer read the context linearly, so the context's effect on acting
  must go to engagement. ``P`` lives on f's first layer as a parametrization during the fit and is
  folded into its weights after it, so the saved reward is a plain network.
* **An engagement prior** (``engagement_prior_weight``), in the manner of ReCRec's exposure prior:
  a penalty ``weight * BCE(P(o=1 | row), q)`` per training row pulls engagement toward an exposure
  ``q``: the log's known propensity where there is one, else the action rate given the context alone
  (a logistic regression), relative to its highest value, to ``engagement_prior_power`` (0.5: Rel-MF's
  popularity ** 0.5). It shapes training only; the held-out score stays the likelihood.

* **The reward decorrelated from the context** (``reward_context_penalty``): a penalty ``weight *
  mean_j corr(f(e), c_j)^2`` within each minibatch, the conditional-independence assumption that
  quality does not follow the context. It shapes training only.

The fourth, engagement on the context alone, is ``propensity_features='context'``. Which of them help,
and by how much, is measured in BENCHMARKS.md ("One channel and a context column"); the warning
(:data:`pyro_irm.inference.identification.REMEDIES`) names only those that did.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from pyro_irm.data.feedback import FeedbackData
from pyro_irm.models.base import gather_rows
from pyro_irm.models.config import ModelConfig

_FIT_ROWS = 50_000  # rows the remedies' regressions read at most


class _Erased(nn.Module):
    """The parametrization ``W -> W P`` of a linear layer's weight ``(out, D)``."""

    def __init__(self, projection: torch.Tensor):
        super().__init__()
        self.register_buffer("projection", projection)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight @ self.projection.to(weight.dtype)


def context_erasure(data: FeedbackData, train_index: torch.Tensor) -> torch.Tensor:
    """``P`` ``(D, D)``: the identity less the projection onto the ridge directions that predict
    each context column from the embedding (fit on at most 50,000 training rows)."""
    from sklearn.linear_model import RidgeCV

    rows = train_index[:_FIT_ROWS]
    x = gather_rows(data.embeddings, rows, torch.device("cpu")).double().numpy()
    y = data.context[rows.to(data.context.device)].double().cpu().numpy()
    directions = np.asarray(RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x, y).coef_).reshape(y.shape[1], -1)
    # A column the embedding does not predict at all (a constant one) has no direction to erase;
    # left in, QR would turn its zero vector into an arbitrary axis and erase that coordinate.
    norms = np.linalg.norm(directions, axis=1)
    directions = directions[norms > 1e-8 * max(float(norms.max(initial=0.0)), 1.0)]
    if not len(directions):
        return torch.eye(x.shape[1])
    basis, _ = np.linalg.qr(directions.T)  # (D, C), orthonormal
    projection = np.eye(x.shape[1]) - basis @ basis.T
    return torch.as_tensor(projection, dtype=torch.float32)


def erase_context(reward_net: nn.Module, projection: torch.Tensor) -> nn.Linear:
    """Make ``reward_net``'s first linear layer read ``e P``; returns that layer."""
    first = next(module for module in reward_net.modules() if isinstance(module, nn.Linear))
    parametrize.register_parametrization(first, "weight", _Erased(projection.to(first.weight.device)))
    return first


def fold_erasure(layer: nn.Linear) -> None:
    """Fold the erasure into the layer's weight, leaving a plain linear layer."""
    parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)


def exposure_prior(
    data: FeedbackData, actions: torch.Tensor, train_index: torch.Tensor, power: float
) -> torch.Tensor:
    """The exposure ``q`` ``(N,)`` the engagement prior pulls P(o=1) toward (see the module)."""
    if data.propensity is not None:
        return data.propensity.float().clamp(1e-3, 1 - 1e-3)
    if data.context is None:
        raise ValueError(
            "engagement_prior_weight: the prior needs context columns (--context-col) or a known "
            "propensity column (--propensity-col) to estimate exposure from"
        )
    from sklearn.linear_model import LogisticRegression

    acted = actions if actions.dim() == 1 else torch.nan_to_num(actions, nan=0.0).amax(1)
    rows = train_index[:_FIT_ROWS]
    context = data.context.double().cpu().numpy()
    target = (acted[rows.to(acted.device)].cpu().numpy() > 0).astype(int)
    if len(np.unique(target)) < 2:
        raise ValueError("engagement_prior_weight: the training rows need both acted and silent rows")
    rate = (
        LogisticRegression(max_iter=1000)
        .fit(context[rows.cpu().numpy()], target)
        .predict_proba(context)[:, 1]
    )
    relative = (rate / rate.max()) ** power
    return torch.as_tensor(relative, dtype=torch.float32).clamp(1e-3, 1 - 1e-3)


class EngagementPrior(nn.Module):
    """``weight * mean BCE(P(o=1 | row), q)`` over a minibatch's rows (no parameters of its own)."""

    def __init__(self, model, exposure: torch.Tensor, weight: float, data: FeedbackData):
        super().__init__()
        self.__dict__["model"] = model  # read, not owned
        self.__dict__["data"] = data
        self.weight = weight
        self.register_buffer("exposure", exposure)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        device = self.model.device
        embeddings = gather_rows(self.data.embeddings, batch, device)
        context = gather_rows(self.data.context, batch, device)
        logits = self.model.propensity_logits(embeddings, context)  # (B, 2): r = 0 and r = 1
        engaged = torch.sigmoid(logits).mean(-1).clamp(1e-6, 1 - 1e-6)
        target = self.exposure[batch.to(self.exposure.device)].to(device)
        return self.weight * nn.functional.binary_cross_entropy(engaged, target)


class RewardContextPenalty(nn.Module):
    """``weight * mean_j corr(f(e), c_j)^2`` within a minibatch: the reward decorrelated from each
    context column (no parameters of its own)."""

    def __init__(self, model, weight: float, data: FeedbackData):
        super().__init__()
        self.__dict__["model"] = model  # read, not owned
        self.__dict__["data"] = data
        self.weight = weight

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        device = self.model.device
        reward = self.model.reward_logits(gather_rows(self.data.embeddings, batch, device))
        context = gather_rows(self.data.context, batch, device).to(reward.dtype)
        reward = reward - reward.mean()
        context = context - context.mean(0)
        covariance = (reward[:, None] * context).mean(0)
        scale = reward.pow(2).mean().sqrt() * context.pow(2).mean(0).sqrt()
        correlation = covariance / scale.clamp_min(1e-8)
        return self.weight * correlation.pow(2).mean()


class Penalties(nn.Module):
    """The sum of several training-only penalties on a minibatch's rows."""

    def __init__(self, *penalties: nn.Module):
        super().__init__()
        self.penalties = nn.ModuleList(penalties)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return sum(penalty(batch) for penalty in self.penalties)


def uses_remedies(config: ModelConfig) -> bool:
    return (
        config.erase_context_from_reward
        or config.engagement_prior_weight > 0
        or config.reward_context_penalty > 0
    )
