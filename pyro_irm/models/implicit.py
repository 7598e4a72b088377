"""The four-group ImplicitRM model: latent preference r, latent propensity o, observed action y.

METHOD.md::

    r ~ Bernoulli(sigmoid(f(e)))
    o ~ Bernoulli(sigmoid(g(features, r)))
    y ~ Bernoulli(o * (r * (1 - eps1) + (1 - r) * eps0))

The default is the seed paper's form (o independent of r given the row). What g sees and whether it
sees r are set in :class:`~pyro_irm.models.config.ModelConfig`; the channel is one module.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyro_irm.groups import GROUP_PREFERENCE, GROUP_PROPENSITY
from pyro_irm.models.base import FeedbackModel, gather_rows, observed_group_mask
from pyro_irm.models.channel import NoisyAndChannel
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.networks import MLP
from pyro_irm.models.propensity import PropensityNetwork, select_by_preference


def propensity_input_dim(config: ModelConfig, embedding_dim: int, context_dim: int) -> int:
    """Width of g's input under ``config.propensity_features``."""
    if config.propensity_features == "context":
        if context_dim == 0:
            raise ValueError(
                "propensity_features='context' needs context columns, but the data has none; "
                "give FeedbackData.context or choose propensity_features='embedding'"
            )
        return context_dim
    if config.propensity_features == "both":
        return embedding_dim + context_dim
    return embedding_dim


class ImplicitFeedbackModel(FeedbackModel):
    """Reward network f, propensity network g and the observation channel, as one Pyro model.

    Args:
        embedding_dim: D, width of the text embeddings.
        context_dim: C, number of context columns (0 for none).
        config: architecture and assumptions.
    """

    def __init__(self, embedding_dim: int, context_dim: int, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding_dim = embedding_dim
        self.context_dim = context_dim
        self.reward_net = MLP(embedding_dim, config.reward_hidden, 1, config.dropout)
        self.propensity = PropensityNetwork(
            propensity_input_dim(config, embedding_dim, context_dim),
            config.propensity_hidden,
            config.propensity_depends_on_preference,
            config.dropout,
        )
        self.channel = NoisyAndChannel(config.eps0, config.eps1)
        self.register_buffer("group_preference", torch.tensor(GROUP_PREFERENCE, dtype=torch.float32))
        self.register_buffer("group_propensity", torch.tensor(GROUP_PROPENSITY, dtype=torch.float32))

    def propensity_features(self, embeddings: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """g's input ``(B, F)``: embedding, context, or both, as configured."""
        mode = self.config.propensity_features
        if mode == "embedding" or (mode == "both" and self.context_dim == 0):
            return embeddings
        if context is None:
            raise ValueError("context: this model's propensity network needs context columns")
        return context if mode == "context" else torch.cat([embeddings, context], dim=-1)

    def propensity_logits(
        self, embeddings: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, 2)`` logits of ``P(o = 1 | row, r)`` for r = 0 and r = 1."""
        return self.propensity(self.propensity_features(embeddings, context))

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        batch_indices: torch.Tensor | None = None,
        num_rows: int | None = None,
        observed: torch.Tensor | None = None,
    ) -> None:
        """The Pyro model over rows ``batch_indices`` of the full ``(N, D)`` embeddings.

        ``num_rows`` is the size of the data the minibatch stands for (the ELBO's scale); it
        defaults to N.
        Sites: ``preference`` (r), ``propensity`` (o, observed when ``observed`` ``(N,)`` is given:
        CausalRM's setting), ``action`` (y, observed when ``labels`` is given). Wrap with
        ``config_enumerate`` to sum out the latent sites exactly.
        """
        with self.rows_plate(num_rows or embeddings.shape[0], batch_indices) as index:
            index = None if batch_indices is None else index
            rows = gather_rows(embeddings, index, self.device)
            context_rows = gather_rows(context, index, self.device)
            actions = gather_rows(labels, index, self.device)
            logged = gather_rows(observed, index, self.device)
            preference = pyro.sample(
                "preference", dist.Bernoulli(logits=self.reward_logits(rows, context_rows))
            )
            propensity_logits = select_by_preference(self.propensity_logits(rows, context_rows), preference)
            propensity = pyro.sample("propensity", dist.Bernoulli(logits=propensity_logits), obs=logged)
            pyro.sample("action", self.channel.distribution(preference, propensity), obs=actions)

    def group_log_joint_given_reward(
        self,
        reward: torch.Tensor,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        context: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``log p(r) + log p(o | r) + log p(y | r, o)`` for each group: ``(B, 4)``, in logit space."""
        reward = reward[:, None]  # (B, 1)
        r = self.group_preference.to(reward.dtype)  # (4,)
        o = self.group_propensity.to(reward.dtype)
        log_preference = torch.where(r.bool(), F.logsigmoid(reward), F.logsigmoid(-reward))
        propensity = select_by_preference(
            self.propensity_logits(embeddings, context)[:, None, :], r
        )  # (B, 1, 2) with r (4,) -> (B, 4)
        log_propensity = torch.where(o.bool(), F.logsigmoid(propensity), F.logsigmoid(-propensity))
        log_action = self.channel.distribution(r, o).log_prob(labels.to(reward.dtype)[:, None])
        joint = log_preference + log_propensity + log_action
        if observed is not None:
            joint = joint + observed_group_mask(observed.to(reward.dtype), o).to(reward.dtype)
        return joint
