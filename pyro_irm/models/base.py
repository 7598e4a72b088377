"""What every model in the package provides, whatever its generative assumptions.

A model is a :class:`~pyro.nn.PyroModule` whose ``forward`` is a Pyro model over a plate of rows
and which can also compute, in closed form, the joint log-probability of each of the four groups
with the observed label. That one method gives the exact marginal likelihood, the exact posterior
over groups and the held-out ELBO, so every model is evaluated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_irm.data.paging import row_file
from pyro_irm.models.networks import MLP, full_precision


def observed_group_mask(observed: torch.Tensor, group_engagement: torch.Tensor) -> torch.Tensor:
    """``(B, 4)``: 0 where a group's o equals the logged ``observed`` ``(B,)``, ``-inf`` elsewhere."""
    agree = group_engagement.to(observed.dtype)[None, :] == observed[:, None]
    zero = torch.zeros((), dtype=torch.float32, device=observed.device)
    return torch.where(agree, zero, -torch.inf)


def gather_rows(
    values: torch.Tensor | None, index: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    """``values[index]`` moved to ``device``; the whole tensor when ``index`` is None. Rows of
    memory-mapped embeddings are read from their file (:mod:`pyro_irm.data.paging`)."""
    if values is None:
        return None
    if index is None:
        return values.to(device, non_blocking=True)
    stored = row_file(values) if values.device.type == "cpu" else None
    if stored is not None:
        return torch.from_numpy(stored.rows(index.cpu().numpy())).to(device, non_blocking=True)
    return values[index.to(values.device)].to(device, non_blocking=True)


@dataclass(frozen=True)
class Rows:
    """The row data a model reads, as one object: every row ``(N, ...)`` or a minibatch ``(B, ...)``.

    Attributes:
        embeddings: ``(N, D)`` text embeddings (possibly memory-mapped).
        actions: ``(N,)`` one combined action, or ``(N, K)`` one column per channel (NaN: missing).
        context: ``(N, C)`` engagement features, or None.
        observed: ``(N,)`` the logged o of an observational log, or None (o latent).
        users: ``(N,)`` user indices (-1 unknown), or None.
        labels: ``(N,)`` explicit preference (NaN unlabelled) the fit uses, or None.
    """

    embeddings: torch.Tensor
    actions: torch.Tensor
    context: torch.Tensor | None = None
    observed: torch.Tensor | None = None
    users: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def extras(self) -> dict[str, torch.Tensor]:
        """The model's keyword row data it has: ``users``, ``labels``."""
        return {k: v for k, v in (("users", self.users), ("labels", self.labels)) if v is not None}

    def take(self, index: torch.Tensor | None, device: torch.device) -> Rows:
        """The rows at ``index`` ``(B,)`` (all rows when None), on ``device``; memory-mapped
        embeddings are read from their file."""
        return Rows(*(gather_rows(getattr(self, name), index, device) for name in _ROW_FIELDS))

    def with_embeddings(self, embeddings: torch.Tensor) -> Rows:
        """These rows with other embeddings ``(N, D')`` (for example a fine-tuned encoder's)."""
        return Rows(embeddings, *(getattr(self, name) for name in _ROW_FIELDS[1:]))

    def group_log_joint(
        self, model: FeedbackModel, values: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``model``'s :meth:`~FeedbackModel.group_log_joint` of these rows: ``(N, 4)``, at the global
        latents ``values`` (default the model's point estimates)."""
        extras = self.extras if values is None else {**self.extras, "values": values}
        return model.group_log_joint(self.embeddings, self.actions, self.context, self.observed, **extras)


_ROW_FIELDS = ("embeddings", "actions", "context", "observed", "users", "labels")


def format_sites(model: FeedbackModel, rows: Rows, guide=None) -> str:
    """The model's sample sites with their shapes as the enumerated ELBO sees them (Pyro's
    ``Trace.format_shapes``, as ``examples/hmm.py --print-shapes`` prints): the globals, then r
    and o with their enumeration dims, the channels, the label. ``rows``: a few rows of the log;
    ``guide``: the whole guide, whose draw of the globals is replayed (default their prior)."""
    from pyro.infer import config_enumerate

    enumerated = poutine.enum(config_enumerate(model, default="parallel"), first_available_dim=-2)
    if guide is not None:
        guide_trace = poutine.trace(guide).get_trace(
            rows.embeddings, rows.actions, rows.context, observed=rows.observed, **rows.extras
        )
        enumerated = poutine.replay(enumerated, trace=guide_trace)
    with poutine.block():
        trace = poutine.trace(enumerated).get_trace(
            rows.embeddings, rows.actions, rows.context, observed=rows.observed, **rows.extras
        )
    trace.compute_log_prob()
    return trace.format_shapes()


def latent_sites(trace) -> list[str]:
    """The latent sample sites of a trace, in order (plates' subsample sites left out)."""
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]


def _buffer_name(site: str) -> str:
    """A global site's buffer name (buffers take no dots)."""
    return site.replace(".", "__")


def prior_centre(prior, drawn: torch.Tensor) -> torch.Tensor:
    """A point to start a global latent at: its prior's mean where finite (through the transforms
    of a transformed distribution), else ``drawn``."""
    try:
        centre = prior.mean
    except NotImplementedError:
        base = getattr(prior, "base_dist", None)
        if base is None:
            return drawn
        centre = prior_centre(base, drawn)
        for transform in prior.transforms:
            centre = transform(centre)
    centre = centre.expand(drawn.shape) if centre.shape != drawn.shape else centre
    return centre if bool(torch.isfinite(centre).all()) else drawn


class FeedbackModel(PyroModule):
    """Base class: a reward network ``f`` plus a generative story for the observed actions.

    Subclasses implement :meth:`forward` (the Pyro model) and :meth:`group_log_joint`.
    ``observes_channels``: it takes every action channel ``(N, K)`` (and users, labels, a logged o),
    not the one combined action ``(N,)``.
    """

    reward_net: MLP
    observes_channels = False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def reward_logits(self, embeddings: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The reward ``f(e)``: ``(B, D) -> (B,)`` logits of P(preferred)."""
        return full_precision(self.reward_net(embeddings).squeeze(-1))

    def group_log_joint(
        self,
        embeddings: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        **extras: torch.Tensor | None,
    ) -> torch.Tensor:
        """``log p(r, o, y | row)`` for the four groups: ``(B, D), (B, K) -> (B, 4)``.

        ``actions`` are the observed actions (``(B,)`` for one channel). With ``observed`` ``(B,)``
        (an observational log) it is ``log p(r, o, y | row)`` at the logged o: the groups whose o
        disagrees are ``-inf``. ``extras`` are the model's other row data (``users`` ``(B,)``,
        ``labels`` ``(B,)`` explicit preference) where it has them.
        """
        reward = self.reward_logits(embeddings, context)
        return self.group_log_joint_given_reward(reward, embeddings, actions, context, observed, **extras)

    def group_log_joint_given_reward(
        self,
        reward: torch.Tensor,
        embeddings: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        **extras: torch.Tensor | None,
    ) -> torch.Tensor:
        """:meth:`group_log_joint` with the reward logits ``(B,)`` given (for example one posterior
        draw of a Bayesian head) instead of computed by ``reward_net``: ``(B, 4)``."""
        raise NotImplementedError

    # -- global latents -----------------------------------------------------------------------
    #
    # A model's global latents (user effects and their scale, flip rates, a user's own) are
    # ``pyro.sample`` sites of :meth:`model_globals`, which ``forward`` runs before the rows. A fit
    # learns them through a guide (``models.guides``); their point estimates (the guide's median)
    # are kept as buffers, saved with the weights, and are what the closed forms read when no
    # values are given.

    def model_globals(self) -> dict[str, torch.Tensor]:
        """Sample every global latent with its prior (the program's global part); returns
        ``{site: value}``. None here."""
        return {}

    def point_values(self) -> dict[str, torch.Tensor]:
        """``{site: value}``: the global latents' point estimates (``{}`` for a model without any)."""
        holder = getattr(self, "point_globals", None)
        if holder is None:
            return {}
        return {name.replace("__", "."): value for name, value in holder.named_buffers()}

    def set_point_values(self, values: dict[str, torch.Tensor]) -> None:
        """Store ``values`` (for example a guide's median) as the point estimates."""
        holder = self.point_globals
        with torch.no_grad():
            for site, value in values.items():
                getattr(holder, _buffer_name(site)).copy_(value.detach())

    def register_point_values(self) -> None:
        """Make a buffer for each global site, set to the centre of its prior (what a fit starts
        from); idempotent, and it draws nothing from the random number generator."""
        if "point_globals" not in self._modules:
            self.point_globals = nn.Module()
        with torch.random.fork_rng(devices=[]), poutine.block():
            trace = poutine.trace(self.model_globals).get_trace()
        for site in latent_sites(trace):
            name = _buffer_name(site)
            if not hasattr(self.point_globals, name):
                centre = prior_centre(trace.nodes[site]["fn"], trace.nodes[site]["value"])
                self.point_globals.register_buffer(name, centre.detach().clone())

    def global_log_prob(self, values: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``log p(globals)`` at ``values`` (default the point estimates): :meth:`model_globals`
        traced with its sites set to them (0 without global latents)."""
        values = self.point_values() if values is None else values
        if not values:
            return torch.zeros((), device=self.device)
        with poutine.block():
            trace = poutine.trace(poutine.condition(self.model_globals, data=values)).get_trace()
        return trace.log_prob_sum()

    def log_marginal_given_reward(
        self,
        reward: torch.Tensor,
        embeddings: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        **extras: torch.Tensor | None,
    ) -> torch.Tensor:
        """:meth:`log_marginal` at given reward logits ``(B,)`` (a Bayesian head's draw): ``(B,)``."""
        joint = self.group_log_joint_given_reward(reward, embeddings, actions, context, observed, **extras)
        return torch.logsumexp(joint, dim=-1)

    def log_marginal(
        self,
        embeddings: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        **extras: torch.Tensor | None,
    ) -> torch.Tensor:
        """Exact ``log p(y | row)`` (``log p(o, y | row)`` when o is logged), summed over groups: ``(B,)``."""
        return torch.logsumexp(self.group_log_joint(embeddings, actions, context, observed, **extras), dim=-1)

    def posterior_groups(
        self,
        embeddings: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        **extras: torch.Tensor | None,
    ) -> torch.Tensor:
        """Exact posterior ``P(group | row, y)``: ``(B, 4)`` rows summing to one."""
        return torch.softmax(self.group_log_joint(embeddings, actions, context, observed, **extras), dim=-1)

    def rows_plate(self, num_rows: int, batch_indices: torch.Tensor | None) -> pyro.plate:
        """The plate over rows; with ``batch_indices`` the ELBO is scaled by ``num_rows / B``."""
        return pyro.plate("rows", num_rows, subsample=batch_indices, device=self.device)
