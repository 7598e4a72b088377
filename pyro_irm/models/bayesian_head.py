"""A Bayesian last layer for the reward: ``f(e) = h(e) . w + b`` with Gaussian priors on ``w`` and ``b``.

``h`` are fixed features: the penultimate activations of a fitted reward network, or the embeddings
themselves. The likelihood is the four-group model with the groups summed out in closed form, in the
seed paper's form (o independent of r given the row): ``P(y = 1 | e) = sigmoid(f) sigmoid(g)``, with
the propensity logits ``g`` fixed (from a fitted model, or known). Without propensity logits every
row is engaged and the head is a Bayesian logistic regression of the labels. The model is small
enough for NUTS, which makes it the reference that SVI's posterior is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F


def log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(log_p))`` for ``log_p < 0``, stable at both ends."""
    return torch.where(log_p > -0.6931, torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p)))


def bayesian_head_model(
    features: torch.Tensor,
    actions: torch.Tensor | None = None,
    propensity_logits: torch.Tensor | None = None,
    prior_scale: float = 1.0,
) -> torch.Tensor:
    """Pyro model: ``weight ~ N(0, s^2 I)``, ``bias ~ N(0, s^2)``, ``y ~ Bernoulli(P(y = 1 | e))``.

    Args:
        features: ``(N, H)`` fixed features ``h(e)``.
        actions: ``(N,)`` observed y (None to sample).
        propensity_logits: ``(N,)`` logits of ``P(o = 1 | e)``; None for a logistic head (o = 1).
        prior_scale: the prior's standard deviation ``s``.

    Returns the ``(N,)`` reward logits.
    """
    num_features = features.shape[-1]
    scale = torch.tensor(prior_scale, dtype=features.dtype, device=features.device)
    weight = pyro.sample(
        "weight", dist.Normal(torch.zeros_like(scale), scale).expand([num_features]).to_event(1)
    )
    bias = pyro.sample("bias", dist.Normal(torch.zeros_like(scale), scale))
    reward = features @ weight + bias
    pyro.deterministic("reward", reward)
    if propensity_logits is None:
        action_logits = reward
    else:
        log_act = F.logsigmoid(reward) + F.logsigmoid(propensity_logits)
        action_logits = log_act - log1mexp(log_act)
    with pyro.plate("rows", features.shape[0], device=features.device):
        pyro.sample("action", dist.Bernoulli(logits=action_logits), obs=actions)
    return reward


@dataclass
class HeadPosterior:
    """Posterior draws: ``weight`` ``(chains, draws, H)`` and ``bias`` ``(chains, draws)``."""

    weight: torch.Tensor
    bias: torch.Tensor
    method: str

    def reward_draws(self, features: torch.Tensor) -> torch.Tensor:
        """``(chains * draws, N)`` reward logits of rows with features ``(N, H)``."""
        weight = self.weight.reshape(-1, self.weight.shape[-1]).to(features.dtype)
        return weight @ features.T + self.bias.reshape(-1, 1).to(features.dtype)

    def means(self) -> np.ndarray:
        """``(H + 1,)`` posterior means of the weight and then the bias."""
        return np.append(self.weight.mean(dim=(0, 1)).numpy(), self.bias.mean().item())

    def standard_deviations(self) -> np.ndarray:
        flat = torch.cat([self.weight.reshape(-1, self.weight.shape[-1]), self.bias.reshape(-1, 1)], dim=1)
        return flat.std(dim=0).numpy()

    def to_inference_data(self):
        """ArviZ data with ``weight`` ``(chain, draw, feature)`` and ``bias`` ``(chain, draw)``."""
        from pyro_irm.analysis.convert import from_groups

        return from_groups(
            {"posterior": {"weight": self.weight.numpy(), "bias": self.bias.numpy()}},
            dims={"weight": ["feature"]},
            coords={"feature": np.arange(self.weight.shape[-1])},
        )
