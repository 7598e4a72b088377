"""The four-group generative model of implicit feedback, written once (docs/method.md, "The
generative model").

Global latents first, then, for row i with embedding e_i, context c_i and user j = user(i)::

    tau   ~ HalfNormal(user_scale)      (or tau = user_scale, fixed)   # how much users differ
    u_j   ~ Normal(0, tau^2)                             # how much a user acts at all
    theta_k ~ p(theta_k)                                 # a component's own globals (flip rates)
    r_i   ~ Bernoulli(sigmoid(f(e_i)))                   # preference: the reward
    o_i   ~ Bernoulli(sigmoid(g(e_i, c_i, r_i) + u_j))   # engagement: would this user act at all
    y_ik  ~ p_k(. | r_i, o_i, x_i, theta_k)  per channel # conditionally independent given (r, o, x)
    l_i   ~ Bernoulli(r_i (1 - eps1) + (1 - r_i) eps0)   # explicit label, few rows

Components are handed in: the reward network f, the propensity component g (any module mapping
features ``(B, F)`` to logits ``(B, 2)`` for r = 0 and 1), one emission component per channel
(:mod:`pyro_irm.models.channel`) and the label channel. The seed paper's model is the special case
of one positive binary channel with fixed noise rates, no users and no labels.

The Pyro program is :meth:`ImplicitFeedbackModel.forward`: :meth:`model_globals` (every global
latent a ``pyro.sample`` site with its prior: ``user_scale``, ``user_effect``, and each
component's ``global_priors``, named ``<its site>.<name>``), then the rows. Its per-row body
:meth:`~ImplicitFeedbackModel.rows_model` is also what :meth:`group_log_joint` traces, with (r, o)
conditioned on the four groups and the globals at given values, so the closed form (the fused
path, the exact posterior, the held-out ELBO, the Bayesian head's likelihood) is derived from the
model rather than written again; so is ``log p(globals)``, from :meth:`model_globals`.

The globals are learned through a guide (``models.guides``: MAP by default, a Normal where a site
is hierarchical); users unseen at fitting time (index -1) get the prior mean, 0. The reward never
sees the user.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from pyro_irm.channels import DEFAULT_CHANNELS, ChannelSpec, check_channels
from pyro_irm.groups import GROUP_PREFERENCE, GROUP_PROPENSITY
from pyro_irm.models.base import FeedbackModel, gather_rows, observed_group_mask
from pyro_irm.models.channel import (
    Channel,
    LabelChannel,
    NoisyAndChannel,
    SignedBinaryChannel,
    kind_component,
)
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.networks import full_precision, reward_network
from pyro_irm.models.propensity import PropensityNetwork, select_by_preference

if TYPE_CHECKING:
    from pyro_irm.data.feedback import FeedbackData

USER_SITE = "user_effect"
USER_SCALE_SITE = "user_scale"
LABEL_SITE = "label"
ENGAGEMENT_SITE = "engagement"


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


def propensity_feature_index(config: ModelConfig, data: FeedbackData, name: str) -> int:
    """Where ``data``'s context column ``name`` sits among g's input features ``(B, F)`` under
    ``config.propensity_features`` (the features are the embedding, then the context)."""
    if config.propensity_features == "embedding":
        raise ValueError(
            f"context column {name!r}: g reads the embedding alone under propensity_features="
            "'embedding'; choose 'both' or 'context' for it to see the context"
        )
    column = data.context_index(name)
    return column if config.propensity_features == "context" else data.embedding_dim + column


def channel_feature_dim(config: ModelConfig, embedding_dim: int, context_dim: int) -> int:
    """Width of the features a learned channel emission sees (``config.channel_features``)."""
    return {
        "none": 0,
        "context": context_dim,
        "embedding": embedding_dim,
        "both": embedding_dim + context_dim,
    }[config.channel_features]


def uses_fixed_channel(config: ModelConfig, channels: Sequence[ChannelSpec]) -> bool:
    """Whether a lone binary channel takes the seed paper's fixed-rate form (``channel_emission``)."""
    if config.channel_emission == "fixed":
        return True
    if config.channel_emission == "learned":
        return False
    return len(channels) == 1


def build_channels(
    specs: Sequence[ChannelSpec], config: ModelConfig, embedding_dim: int, context_dim: int
) -> list[Channel]:
    """The default emission component of each declared channel."""
    specs = check_channels(specs)
    feature_dim = channel_feature_dim(config, embedding_dim, context_dim)
    fixed = uses_fixed_channel(config, specs)
    channels: list[Channel] = []
    for spec in specs:
        if spec.kind == "binary" and fixed:
            channels.append(NoisyAndChannel(config.eps0, config.eps1, spec))
        elif spec.kind == "binary":
            channels.append(SignedBinaryChannel(spec, feature_dim))
        else:  # each kind names its default emission (a registered kind too)
            channels.append(kind_component(spec).build(spec, config, feature_dim))
    return channels


def site_names(channels: Sequence[Channel]) -> tuple[str, ...]:
    """Sample site of each channel: ``action`` for a lone channel, ``action_<name>`` otherwise."""
    if len(channels) == 1:
        return ("action",)
    return tuple(f"action_{c.spec.name}" for c in channels)


class ImplicitFeedbackModel(FeedbackModel):
    """Reward network f, propensity g, user effects, channel emissions and labels as one Pyro model.

    Args:
        embedding_dim: D, width of the text embeddings.
        context_dim: C, number of context columns (0 for none).
        config: architecture and assumptions.
        channels: emission components or channel declarations, in the order of the actions'
            columns; default one positive binary channel (the seed paper's).
        num_users: U, number of users with an engagement effect (0 for none).
        propensity: the propensity component g; default :class:`PropensityNetwork` per ``config``.
    """

    observes_channels = True

    def __init__(
        self,
        embedding_dim: int,
        context_dim: int,
        config: ModelConfig,
        channels: Sequence[Channel | ChannelSpec] | None = None,
        num_users: int = 0,
        propensity: torch.nn.Module | None = None,
    ):
        super().__init__()
        self.config = config
        self.embedding_dim = embedding_dim
        self.context_dim = context_dim
        self.num_users = int(num_users)
        # Built in this order (f, g, channels, users) so that a seed gives the same initial weights
        # as the seed paper's model had before channels and users existed.
        self.reward_net = reward_network(embedding_dim, config)
        self.propensity = propensity or PropensityNetwork(
            propensity_input_dim(config, embedding_dim, context_dim),
            config.propensity_hidden,
            config.propensity_depends_on_preference,
            config.dropout,
        )
        channels = list(channels or DEFAULT_CHANNELS)
        specs = [c if isinstance(c, ChannelSpec) else c.spec for c in channels]
        defaults = build_channels(specs, config, embedding_dim, context_dim)
        built = [d if isinstance(c, ChannelSpec) else c for c, d in zip(channels, defaults, strict=True)]
        self.channels = torch.nn.ModuleList(built)
        self.sites = site_names(built)
        self.label_channel = LabelChannel(config.label_noise, learned=config.learn_label_noise)
        self.register_buffer("group_preference", torch.tensor(GROUP_PREFERENCE, dtype=torch.float32))
        self.register_buffer("group_engagement", torch.tensor(GROUP_PROPENSITY, dtype=torch.float32))
        self.register_point_values()

    @property
    def channel_specs(self) -> tuple[ChannelSpec, ...]:
        return tuple(c.spec for c in self.channels)

    @property
    def channel(self) -> Channel:
        """The first (in the seed paper's model, the only) channel."""
        return self.channels[0]

    # -- components -------------------------------------------------------------------------

    def propensity_features(self, embeddings: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """g's input ``(B, F)``: embedding, context, or both, as configured."""
        mode = self.config.propensity_features
        if mode == "embedding" or (mode == "both" and self.context_dim == 0):
            return embeddings
        if context is None:
            raise ValueError("context: this model's propensity network needs context columns")
        return context if mode == "context" else torch.cat([embeddings, context], dim=-1)

    def propensity_logits(
        self,
        embeddings: torch.Tensor,
        context: torch.Tensor | None = None,
        values: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``(B, 2)`` logits of ``P(o = 1 | row, r)`` for r = 0 and r = 1 (before user effects);
        a g with globals of its own gets them from ``values`` (default the point estimates)."""
        features = self.propensity_features(embeddings, context)
        own = self.own_values(self.point_values() if values is None else values, ENGAGEMENT_SITE)
        return full_precision(self.propensity(features, **own))

    def emission_features(
        self, embeddings: torch.Tensor, context: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The row features ``(B, F)`` a learned channel emission sees, or None."""
        mode = self.config.channel_features
        parts = {
            "none": [],
            "context": [context],
            "embedding": [embeddings],
            "both": [embeddings, context],
        }[mode]
        parts = [p for p in parts if p is not None]
        return torch.cat(parts, dim=-1) if parts else None

    @property
    def user_effect(self) -> torch.Tensor:
        """The users' engagement effects' point estimates ``(U,)``."""
        return getattr(self.point_globals, USER_SITE)

    def global_components(self) -> list[tuple[str, torch.nn.Module]]:
        """``(site prefix, component)`` of every part that may have global latents of its own
        (``global_priors()``): the channels (under their sites), the label channel, g."""
        parts = [(site, channel) for site, channel in zip(self.sites, self.channels, strict=True)]
        return [*parts, (LABEL_SITE, self.label_channel), (ENGAGEMENT_SITE, self.propensity)]

    def model_globals(self) -> dict[str, torch.Tensor]:
        """The program's global part: every global latent sampled from its prior, in order
        (``user_scale``, then ``user_effect`` given it, then each component's). ``{site: value}``."""
        values = {}
        if self.num_users > 0:
            scale = self.group_preference.new_tensor(self.config.user_scale)
            if self.config.learn_user_scale:
                scale = values[USER_SCALE_SITE] = pyro.sample(USER_SCALE_SITE, self.user_scale_prior())
            with pyro.plate("users", self.num_users, device=self.device):
                prior = dist.Normal(self.group_preference.new_zeros(self.num_users), scale)
                # A learned scale makes the effects hierarchical: MAP of both collapses to 0, so the
                # default guide gives them a Normal (models.guides.GlobalGuide).
                values[USER_SITE] = pyro.sample(
                    USER_SITE, prior, infer={"hierarchical": self.config.learn_user_scale}
                )
        for prefix, component in self.global_components():
            priors = component.global_priors() if hasattr(component, "global_priors") else {}
            for name, prior in priors.items():
                values[f"{prefix}.{name}"] = pyro.sample(f"{prefix}.{name}", prior)
        return values

    def user_scale_prior(self) -> dist.Distribution:
        """The prior of the users' spread under ``learn_user_scale``: ``HalfNormal(user_scale)``
        (override for another)."""
        return dist.HalfNormal(self.group_preference.new_tensor(self.config.user_scale))

    @staticmethod
    def own_values(values: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        """A component's globals among ``values``, by its own names (``<prefix>.<name>`` -> name)."""
        start = prefix + "."
        return {site[len(start) :]: value for site, value in values.items() if site.startswith(start)}

    def user_offsets(self, users: torch.Tensor | None, effects: torch.Tensor | None = None) -> torch.Tensor:
        """Each row's user effect ``(B,)`` from user indices ``(B,)``; -1 (unseen) and no users give 0."""
        if users is None or self.num_users == 0:
            return torch.zeros((), device=self.device)
        effects = self.user_effect if effects is None else effects
        padded = torch.cat([effects, effects.new_zeros(1)])
        users = users.long()
        unknown = (users < 0) | (users >= self.num_users)
        return padded[torch.where(unknown, torch.full_like(users, self.num_users), users)]

    def initialize_channels(self, actions: torch.Tensor) -> None:
        """Starting values of the channel emissions from the logged actions ``(N, K)``."""
        actions = actions if actions.dim() == 2 else actions[:, None]
        for k, channel in enumerate(self.channels):
            channel.initialize(actions[:, k])

    # -- the model --------------------------------------------------------------------------

    def rows_model(
        self,
        reward: torch.Tensor,
        embeddings: torch.Tensor,
        actions: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        values: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """The generative story of a batch of rows, given their reward logits ``(B,)`` and the
        global latents ``values`` (``{site: value}``, default the point estimates).

        ``actions`` ``(B, K)`` (or ``(B,)`` for one channel) in the channels' order; ``observed``
        ``(B,)`` the logged o of an observational log; ``users`` ``(B,)`` user indices; ``labels``
        ``(B,)`` explicit preference, NaN where a row has none (the site is masked there).
        """
        values = self.point_values() if values is None else values
        preference = pyro.sample("preference", dist.Bernoulli(logits=reward))
        propensity_logits = select_by_preference(
            self.propensity_logits(embeddings, context, values), preference
        )
        user_offset = self.user_offsets(users, values.get(USER_SITE))
        engagement = pyro.sample(
            ENGAGEMENT_SITE, dist.Bernoulli(logits=propensity_logits + user_offset), obs=observed
        )
        features = self.emission_features(embeddings, context)
        if actions is not None and actions.dim() == 1:
            actions = actions[:, None]
        for k, (site, channel) in enumerate(zip(self.sites, self.channels, strict=True)):
            emission = channel.distribution(preference, engagement, features, **self.own_values(values, site))
            if actions is None:
                pyro.sample(site, emission)
                continue
            logged = actions[:, k].to(reward.dtype)
            present = torch.isfinite(logged)
            if bool(present.all()):
                pyro.sample(site, emission, obs=channel.transform(logged))
                continue
            # A missing cell leaves this channel out of its row's likelihood (summing a distribution
            # over its values gives 1): the site is masked there, with any valid value in its place.
            filled = torch.where(present, logged, torch.ones_like(logged))
            with poutine.mask(mask=present):
                pyro.sample(site, emission, obs=channel.transform(filled))
        if labels is not None:
            has_label = torch.isfinite(labels)
            with poutine.mask(mask=has_label):
                pyro.sample(
                    LABEL_SITE,
                    self.label_channel.distribution(preference, **self.own_values(values, LABEL_SITE)),
                    obs=torch.where(has_label, labels, torch.zeros_like(labels)).to(reward.dtype),
                )

    def forward(
        self,
        embeddings: torch.Tensor,
        actions: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        batch_indices: torch.Tensor | None = None,
        num_rows: int | None = None,
        observed: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        """The Pyro model over rows ``batch_indices`` of the full ``(N, D)`` embeddings.

        ``actions`` are the observed actions ``(N, K)`` (or ``(N,)``); ``num_rows`` is the size of the
        data the minibatch stands for (the ELBO's scale; default N); ``users`` ``(N,)`` user
        indices; ``labels`` ``(N,)`` explicit preference labels, NaN where absent.
        Sites: the globals (:meth:`model_globals`), then per row ``preference`` (r),
        ``engagement`` (o, observed in CausalRM's setting), one ``action*`` site per channel,
        ``label``. Wrap with ``config_enumerate`` to sum out r and o exactly.
        """
        values = self.model_globals()
        with self.rows_plate(num_rows or embeddings.shape[0], batch_indices) as index:
            index = None if batch_indices is None else index
            rows = gather_rows(embeddings, index, self.device)
            context_rows = gather_rows(context, index, self.device)
            self.rows_model(
                self.reward_logits(rows, context_rows),
                rows,
                gather_rows(actions, index, self.device),
                context_rows,
                gather_rows(observed, index, self.device),
                gather_rows(users, index, self.device),
                gather_rows(labels, index, self.device),
                values,
            )

    # -- closed forms derived from the model --------------------------------------------------

    def group_log_joint_given_reward(
        self,
        reward: torch.Tensor,
        embeddings: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        values: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``log p(r, o, y, label | row, globals)`` of each group ``(B, 4)``: :meth:`rows_model`
        traced with (r, o) set to the four groups, the globals at ``values`` (default the point
        estimates), and its row sites' log-probabilities summed."""
        trace = self._group_trace(reward, embeddings, actions, context, observed, users, labels, values)
        joint = sum(site["log_prob"] for site in trace.nodes.values() if site["type"] == "sample")
        joint = joint.expand(len(GROUP_PREFERENCE), reward.shape[0]).transpose(0, 1)  # (B, 4)
        if observed is not None:
            o = self.group_engagement.to(reward.dtype)
            joint = joint + observed_group_mask(observed.to(reward.dtype), o).to(reward.dtype)
        return joint

    def _group_trace(self, reward, embeddings, actions, context, observed, users, labels, values=None):
        """The trace of :meth:`rows_model` at the four groups (sites' log-probabilities ``(4, B)``)."""
        dtype = reward.dtype
        grid = {"preference": self.group_preference.to(dtype)[:, None]}  # (4, 1)
        if observed is None:
            grid[ENGAGEMENT_SITE] = self.group_engagement.to(dtype)[:, None]
        else:
            observed = observed.to(dtype)
        # Blocked, so that a Pyro program calling this (a Bayesian head) does not see the sites.
        with poutine.block():
            trace = poutine.trace(poutine.condition(self.rows_model, data=grid)).get_trace(
                reward, embeddings, actions, context, observed, users, labels, values
            )
        trace.compute_log_prob()
        return trace

    def channel_log_likelihood(
        self, embeddings: torch.Tensor, actions: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sum_k log p(y_k | r, o, row)`` of each group ``(B, 4)``: the actions' sites of the
        traced model (what the amortized guide adds to its logits)."""
        reward = embeddings.new_zeros(embeddings.shape[0])
        trace = self._group_trace(reward, embeddings, actions, context, None, None, None)
        total = sum(trace.nodes[site]["log_prob"] for site in self.sites)
        return total.expand(len(GROUP_PREFERENCE), embeddings.shape[0]).transpose(0, 1)
