"""The observation channel: how the action y arises from preference r and propensity o."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn


class NoisyAndChannel(nn.Module):
    """``P(y = 1 | r, o) = o * (r * (1 - eps1) + (1 - r) * eps0)``; ``y = r AND o`` when both eps are 0.

    The rates are fixed buffers (saved with the model). ``torch.distributions.Bernoulli`` clamps
    probabilities of exactly 0 and 1 to the dtype's epsilon, so impossible (y, r, o) combinations
    get a log-probability of about -16 in float32 and -36 in float64, not -inf.
    """

    def __init__(self, eps0: float = 0.0, eps1: float = 0.0):
        super().__init__()
        # float64 so that the rates are exact; they are cast to the inputs' dtype where used.
        self.register_buffer("eps0", torch.tensor(float(eps0), dtype=torch.float64))
        self.register_buffer("eps1", torch.tensor(float(eps1), dtype=torch.float64))

    def action_probability(self, preference: torch.Tensor, propensity: torch.Tensor) -> torch.Tensor:
        eps0 = self.eps0.to(preference.dtype)
        eps1 = self.eps1.to(preference.dtype)
        return propensity * (preference * (1 - eps1) + (1 - preference) * eps0)

    def distribution(self, preference: torch.Tensor, propensity: torch.Tensor) -> dist.Bernoulli:
        """``Bernoulli`` over y for (broadcastable) 0/1 tensors ``r`` and ``o``."""
        return dist.Bernoulli(probs=self.action_probability(preference, propensity))
