"""Models in which the preference is observed: naive (the action is the label) and oracle.

``naive`` treats "no action" as "bad": it is the four-group model with the propensity fixed at
o = 1 for every row, so y = r. On an observational log it is the same: a row without feedback
counts as a negative, which is exactly the bias the weighted estimators correct. Trained on the
true preferences instead, the same model is the ``oracle`` (the ceiling). Both share the fit loop,
result and :class:`RewardModel` of ImplicitRM; so do the loss-based baselines, which fit this
model's reward network with their own risk.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyro_irm.groups import GROUP_NAMES
from pyro_irm.models.base import FeedbackModel, gather_rows
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.networks import reward_network

_ENGAGED_POSITIVE = GROUP_NAMES.index("engaged_positive")
_ENGAGED_NEGATIVE = GROUP_NAMES.index("engaged_negative")


class ObservedPreferenceModel(FeedbackModel):
    """``r ~ Bernoulli(sigmoid(f(e)))`` observed directly as the action; every row engaged (o = 1)."""

    def __init__(self, embedding_dim: int, context_dim: int, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding_dim = embedding_dim
        self.context_dim = context_dim
        self.reward_net = reward_network(embedding_dim, config)

    def forward(
        self,
        embeddings: torch.Tensor,
        actions: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        batch_indices: torch.Tensor | None = None,
        num_rows: int | None = None,
        observed: torch.Tensor | None = None,
        **extras: torch.Tensor | None,
    ) -> None:
        """Pyro model with one site, ``preference``, observed as ``actions`` ``(N,)`` (the oracle's
        are the true preferences)."""
        with self.rows_plate(num_rows or embeddings.shape[0], batch_indices) as index:
            index = None if batch_indices is None else index
            rows = gather_rows(embeddings, index, self.device)
            observed = gather_rows(actions, index, self.device)
            pyro.sample("preference", dist.Bernoulli(logits=self.reward_logits(rows)), obs=observed)

    def group_log_joint_given_reward(
        self,
        reward: torch.Tensor,
        embeddings: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        **extras: torch.Tensor | None,
    ) -> torch.Tensor:
        """Engaged positive when y = 1, engaged negative when y = 0; silent groups impossible.
        ``observed`` is ignored: this model treats every row as engaged."""
        actions = actions.to(reward.dtype)
        joint = torch.full(
            (reward.shape[0], len(GROUP_NAMES)),
            -torch.inf,
            dtype=reward.dtype,
            device=reward.device,
        )
        positive = actions.bool()
        joint[:, _ENGAGED_POSITIVE] = torch.where(positive, F.logsigmoid(reward), -torch.inf)
        joint[:, _ENGAGED_NEGATIVE] = torch.where(positive, -torch.inf, F.logsigmoid(-reward))
        return joint
