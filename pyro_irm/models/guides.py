"""Guides as components: one for the global latents (:class:`GlobalGuide`: MAP, a Normal, or a
user's own) and one for the rows' groups (none, :class:`EmptyGuide`, where the model enumerates
them; or the amortized :class:`StratificationGuide`), joined in a :class:`ModelGuide`."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoDelta, AutoNormal, init_to_value
from pyro.nn import PyroModule
from torch import nn

from pyro_irm.groups import GROUP_PREFERENCE, GROUP_PROPENSITY
from pyro_irm.models.base import FeedbackModel, gather_rows, observed_group_mask
from pyro_irm.models.config import GlobalGuideKind
from pyro_irm.models.implicit import ImplicitFeedbackModel
from pyro_irm.models.networks import MLP


class EmptyGuide(PyroModule):
    """The guide of a model without unobserved sites after enumeration: it samples nothing."""

    def forward(self, *args, **kwargs) -> None:
        return None


class _Baseline(nn.Module):
    """Per-row control variate for the score-function gradient: ``(B, F) -> (B,)``."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.net = MLP(in_dim, (32,), 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs).squeeze(-1)


class StratificationGuide(PyroModule):
    """Amortized ``q(r, o | e, y)``: a network over the embedding, context and action gives the
    four group logits; ``r`` and then ``o | r`` are sampled from them, which spans every
    distribution over the four groups.

    The channels' log-likelihood ``sum_k log p(y_k | r, o)`` under the model (held fixed: no
    gradient reaches the model through the guide) is added to the network's logits, so the guide
    starts on the support the actions allow (a y = 1 row is an engaged positive when eps = 0) and
    the network learns only the rest. User effects, where the model has them, are point estimates
    that live on the model; the guide samples only r and o.

    Gradients: with ``enumerate_groups=True`` (the default fit, ``TraceEnum_ELBO``), the guide's two
    sites are summed out exactly: four groups per row cost one broadcast, and the gradient has no
    sampling variance. With ``enumerate_groups=False`` (``TraceGraph_ELBO``), r and o are sampled
    and their score-function terms use a learned per-row baseline; TraceGraph_ELBO rather than
    Trace_ELBO because it uses the plate's conditional independence, so each row's score term is
    weighted by that row's cost alone rather than the whole minibatch's. That estimator is
    there for extensions whose latent space is too large to sum; on the four-group model it
    converges far slower and can settle at the naive fixed point (every silent row an engaged
    negative), as BENCHMARKS.md shows.

    Args:
        model: the :class:`~pyro_irm.models.implicit.ImplicitFeedbackModel` it approximates the
            posterior of (read, not owned: its parameters are not the guide's).
    """

    def __init__(self, model: ImplicitFeedbackModel, enumerate_groups: bool = True):
        super().__init__()
        config = model.config
        in_dim = model.embedding_dim + model.context_dim + len(model.channels)
        self.net = MLP(in_dim, config.guide_hidden, 4, config.dropout)
        self.baseline = _Baseline(in_dim)
        # A plain attribute, not a submodule: the model's parameters are not the guide's.
        self.__dict__["_model"] = model
        self.enumerate_groups = enumerate_groups
        self.register_buffer("group_preference", torch.tensor(GROUP_PREFERENCE, dtype=torch.float32))
        self.register_buffer("group_engagement", torch.tensor(GROUP_PROPENSITY, dtype=torch.float32))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _inputs(
        self, embeddings: torch.Tensor, actions: torch.Tensor, context: torch.Tensor | None
    ) -> torch.Tensor:
        actions = actions if actions.dim() == 2 else actions[:, None]
        transformed = [
            channel.transform(actions[:, k].to(embeddings.dtype))
            for k, channel in enumerate(self._model.channels)
        ]
        # An empty cell (NaN) reads as 0 here; the model's own likelihood, added to the logits,
        # leaves that channel out exactly (group_logits).
        parts = [embeddings, torch.nan_to_num(torch.stack(transformed, dim=-1), nan=0.0)]
        if context is not None:
            parts.insert(1, context)
        return torch.cat(parts, dim=-1)

    def group_logits(
        self,
        embeddings: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        **extras: torch.Tensor | None,
    ) -> torch.Tensor:
        """Unnormalized ``log q(group | e, y)``: ``(B, 4)``; with a logged ``observed`` ``(B,)``
        the groups whose o disagrees get ``-inf``."""
        logits = self.net(self._inputs(embeddings, actions, context))
        o = self.group_engagement.to(logits.dtype)
        with torch.no_grad():
            support = self._model.channel_log_likelihood(embeddings, actions, context)
        logits = logits + support.to(logits.dtype)
        if observed is not None:
            logits = logits + observed_group_mask(observed.to(logits.dtype), o).to(logits.dtype)
        return logits

    def posterior_groups(
        self,
        embeddings: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        **extras: torch.Tensor | None,
    ) -> torch.Tensor:
        """``q(group | e, y)``: ``(B, 4)`` rows summing to one."""
        return torch.softmax(self.group_logits(embeddings, actions, context, observed), dim=-1)

    def _site_options(self, inputs: torch.Tensor) -> dict:
        if self.enumerate_groups:
            return {"enumerate": "parallel"}
        return {"baseline": {"nn_baseline": self.baseline, "nn_baseline_input": inputs}}

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
        """Samples r and, unless the log has it (``observed``), o, from the four group logits."""
        if actions is None:
            raise ValueError("actions: the stratification guide conditions on the observed actions")
        plate = pyro.plate(
            "rows", num_rows or embeddings.shape[0], subsample=batch_indices, device=self.device
        )
        with plate as index:
            index = None if batch_indices is None else index
            rows = gather_rows(embeddings, index, self.device)
            context_rows = gather_rows(context, index, self.device)
            actions = gather_rows(actions, index, self.device)
            logged = gather_rows(observed, index, self.device)
            inputs = self._inputs(rows, actions, context_rows)
            log_q = torch.log_softmax(self.group_logits(rows, actions, context_rows, logged), dim=-1)
            # Groups are (EP, SP, EN, SN) = (r1 o1, r1 o0, r0 o1, r0 o0).
            preference_logit = torch.logsumexp(log_q[:, :2], -1) - torch.logsumexp(log_q[:, 2:], -1)
            if logged is not None:  # o is observed in the model: q(r | e, y, o) alone
                pyro.sample(
                    "preference", dist.Bernoulli(logits=preference_logit), infer=self._site_options(inputs)
                )
                return
            preference = pyro.sample(
                "preference",
                dist.Bernoulli(logits=preference_logit),
                infer=self._site_options(inputs),
            )
            propensity_if_negative = log_q[:, 2] - log_q[:, 3]
            propensity_if_positive = log_q[:, 0] - log_q[:, 1]
            propensity_logit = propensity_if_negative + preference * (
                propensity_if_positive - propensity_if_negative
            )
            pyro.sample(
                "engagement",
                dist.Bernoulli(logits=propensity_logit),
                infer=self._site_options(inputs),
            )


class GlobalGuide(PyroModule):
    """The guide of a model's global latents (:meth:`~pyro_irm.models.base.FeedbackModel.model_globals`):
    ``'map'`` a point mass at each (``AutoDelta``: MAP), ``'normal'`` a Normal for each
    (``AutoNormal``), or ``'auto'``: MAP, except a site marked ``infer={"hierarchical": True}``
    (effects whose scale is itself learned, where MAP of both collapses to 0), which gets a Normal.

    Built over the model's global part alone, so it takes no row data; it starts at the model's
    point values (:meth:`~pyro_irm.models.base.FeedbackModel.point_values`). ``median()`` is what a
    fit stores back as those values.
    """

    def __init__(self, model: FeedbackModel, kind: GlobalGuideKind = "auto"):
        super().__init__()
        if kind not in ("auto", "map", "normal"):
            raise ValueError(f"global guide must be 'auto', 'map' or 'normal', got {kind!r}")
        self.kind = kind
        self.__dict__["_model"] = model  # read, not owned
        start = init_to_value(values=model.point_values())
        with torch.random.fork_rng(devices=[]), poutine.block():
            trace = poutine.trace(model.model_globals).get_trace()
        hierarchical = {
            name for name in trace.stochastic_nodes if trace.nodes[name]["infer"].get("hierarchical")
        }
        normal = (
            set(trace.stochastic_nodes) if kind == "normal" else (hierarchical if kind == "auto" else set())
        )
        point = [name for name in trace.stochastic_nodes if name not in normal]
        self.sites = tuple(trace.stochastic_nodes)
        parts = []
        if point:
            parts.append(AutoDelta(poutine.block(model.model_globals, expose=point), init_loc_fn=start))
        if normal:
            parts.append(
                AutoNormal(
                    poutine.block(model.model_globals, expose=sorted(normal)),
                    init_loc_fn=start,
                    init_scale=0.05,
                )
            )
        self.parts = nn.ModuleList(parts)
        with torch.random.fork_rng(devices=[]):
            self()  # set up the parameters now, so that optimizers and checkpoints see them

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Sample the global sites (the model's arguments are not needed); ``{site: value}``."""
        values = {}
        for part in self.parts:
            values.update(part())
        return values

    @torch.no_grad()
    def median(self) -> dict[str, torch.Tensor]:
        """``{site: value}``: each global latent's posterior median under this guide."""
        values = {}
        for part in self.parts:
            values.update(part.median())
        return values

    @property
    def deterministic(self) -> bool:
        """Whether every site is a point mass (the held-out score then needs one draw)."""
        return all(isinstance(part, AutoDelta) for part in self.parts)


SPREAD_LEVELS = (0.05, 0.95)
Spread = dict[str, dict[str, torch.Tensor]]


@torch.no_grad()
def global_spread(globals_guide: nn.Module, draws: int = 1000, seed: int = 0) -> Spread:
    """How uncertain a guide leaves each global latent: ``{site: {"sd", "q05", "q95"}}``, each of
    the site's shape, from ``draws`` draws of the guide in the site's own (constrained) space; ``{}``
    for a guide of point masses (MAP), whose spread is zero by construction. The random number
    generator is left as it was."""
    if getattr(globals_guide, "deterministic", False):
        return {}
    with torch.random.fork_rng(devices=[]), poutine.block():
        torch.manual_seed(seed)
        samples = [globals_guide() for _ in range(draws)]
    spread = {}
    for site in samples[0]:
        stacked = torch.stack([sample[site].detach() for sample in samples])
        low, high = torch.quantile(stacked.float(), torch.tensor(SPREAD_LEVELS, device=stacked.device), dim=0)
        spread[site] = {"sd": stacked.std(0), "q05": low, "q95": high}
    return spread


def store_globals(model: FeedbackModel, globals_guide: nn.Module | None) -> Spread:
    """After a fit: keep each global latent's posterior median on ``model`` as its point estimate
    (what scoring and the closed forms read) and return its spread (:func:`global_spread`)."""
    if globals_guide is None:
        return {}
    model.set_point_values(globals_guide.median())
    return global_spread(globals_guide)


class ModelGuide(PyroModule):
    """A whole guide as components: one for the global latents (:class:`GlobalGuide`, or a user's
    own module whose call samples them and whose ``median()`` gives ``{site: value}``) and one for
    the rows (none when they are enumerated: :class:`EmptyGuide`; or :class:`StratificationGuide`)."""

    def __init__(self, globals_guide: nn.Module | None, rows_guide: nn.Module):
        super().__init__()
        self.globals_guide = globals_guide
        self.rows_guide = rows_guide

    def forward(self, *args, **kwargs) -> None:
        if self.globals_guide is not None:
            self.globals_guide()
        return self.rows_guide(*args, **kwargs)
