"""A Bayesian last layer for the reward: ``f(e) = h(e) . w + b`` with Gaussian priors on ``w`` and ``b``.

``h`` are fixed features: the penultimate activations of a fitted reward network. The prior sits
where the fit put the layer (``w ~ N(w_hat, s^2 I)``, ``b ~ N(b_hat, s^2)``), so the posterior
says how far the data let the layer move from the point fit, not how far it is from zero. The
likelihood is the fitted generative model's own (every channel, user effect and label; the groups
summed out), handed in as a function of the reward logits. The model is small enough for NUTS,
which makes it the reference that SVI's posterior is checked against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

# ``log p(data of row i | reward_i)`` for reward logits ``(N,)``: ``(N,)``.
LogLikelihood = Callable[[torch.Tensor], torch.Tensor]


def log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(log_p))`` for ``log_p < 0``, stable at both ends."""
    return torch.where(log_p > -0.6931, torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p)))


def bayesian_head_model(
    features: torch.Tensor,
    log_likelihood: LogLikelihood,
    prior_weight: torch.Tensor,
    prior_bias: torch.Tensor | float = 0.0,
    prior_scale: float = 1.0,
) -> torch.Tensor:
    """Pyro model: ``weight ~ N(prior_weight, s^2 I)``, ``bias ~ N(prior_bias, s^2)``, and the rows'
    log-likelihood at ``reward = features @ weight + bias`` as a factor.

    Args:
        features: ``(N, H)`` fixed features ``h(e)``.
        log_likelihood: ``(N,) -> (N,)``, the data's log-likelihood per row given the reward logits.
        prior_weight: ``(H,)`` prior mean of the weight (the point fit's); prior_bias: its bias.
        prior_scale: the prior's standard deviation ``s``.

    Returns the ``(N,)`` reward logits.
    """
    loc = torch.as_tensor(prior_weight, dtype=features.dtype, device=features.device)
    bias_loc = torch.as_tensor(prior_bias, dtype=features.dtype, device=features.device)
    scale = torch.full_like(bias_loc, prior_scale)
    weight = pyro.sample("weight", dist.Normal(loc, scale).to_event(1))
    bias = pyro.sample("bias", dist.Normal(bias_loc, scale))
    reward = features @ weight + bias
    pyro.deterministic("reward", reward)
    with pyro.plate("rows", features.shape[0], device=features.device):
        pyro.factor("log_likelihood", log_likelihood(reward))
    return reward


def seed_paper_likelihood(
    actions: torch.Tensor, propensity_logits: torch.Tensor | None = None
) -> LogLikelihood:
    """The seed paper's one-channel likelihood in closed form: ``P(y = 1) = sigmoid(f) sigmoid(g)``
    with fixed propensity logits ``g`` ``(N,)``; a logistic regression of ``actions`` without them.
    (The fitted model's own likelihood is what :func:`~pyro_irm.inference.fit_bayesian_head` uses;
    this form is for problems given as logits, and is tested equal to the model's.)"""

    def log_likelihood(reward: torch.Tensor) -> torch.Tensor:
        if propensity_logits is None:
            logits = reward
        else:
            log_act = F.logsigmoid(reward) + F.logsigmoid(propensity_logits.to(reward.dtype))
            logits = log_act - log1mexp(log_act)
        return dist.Bernoulli(logits=logits).log_prob(actions.to(reward.dtype))

    return log_likelihood


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
