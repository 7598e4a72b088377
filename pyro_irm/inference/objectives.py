"""The training objective of each (method, inference) pair, as one torch module.

Every objective holds the model and guide (so ``parameters()`` is what the optimizer updates) and
the training data, and offers ``loss_and_grads(batch_rows, num_rows=...) -> float`` (the negative
ELBO or the risk per training row, with its gradient accumulated) and
``validation_score(rows) -> float`` (higher is better; computed from observed data only).
``TraceGraph_ELBO`` has no differentiable loss (its gradient comes from a surrogate), which is why
the interface is ``loss_and_grads`` rather than a loss tensor.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, config_enumerate
from pyro.nn import PyroModule
from torch import nn

from pyro_irm.data.feedback import FeedbackData
from pyro_irm.estimators import get_estimator
from pyro_irm.estimators.nuisance import EstimatorConfig, Nuisance
from pyro_irm.estimators.risk_objective import LossObjective
from pyro_irm.inference.config import TrainConfig
from pyro_irm.models.base import FeedbackModel, gather_rows
from pyro_irm.models.guides import EmptyGuide, StratificationGuide


class _DataObjective(nn.Module):
    """Holds the training data; subclasses implement :meth:`loss_and_grads` on row indices.

    ``extras`` are the model's other row data by keyword (``users``, ``labels``), each
    ``(N,)`` or None.
    """

    def __init__(
        self,
        model: FeedbackModel,
        guide: nn.Module | None,
        data: FeedbackData,
        actions: torch.Tensor,
        observed: torch.Tensor | None,
        extras: dict[str, torch.Tensor | None] | None = None,
    ):
        super().__init__()
        self.model = model
        self.guide = guide
        self.data = data
        self.actions = actions
        self.observed = observed
        self.extras = {k: v for k, v in (extras or {}).items() if v is not None}

    def model_args(self) -> tuple:
        return self.data.embeddings, self.actions, self.data.context

    def validation_score(self, index: torch.Tensor) -> float:
        """The exact held-out ELBO per row on rows ``index`` (higher is better)."""
        return heldout_elbo(
            self.model, self.guide, *self.model_args(), index, observed=self.observed, **self.extras
        )


class SVIObjective(_DataObjective):
    """``-ELBO / num_rows`` of a Pyro (model, guide) pair under one of Pyro's ELBO estimators."""

    def __init__(
        self,
        model: FeedbackModel,
        guide: nn.Module,
        elbo: ELBO,
        enumerate_model: bool,
        data: FeedbackData,
        actions: torch.Tensor,
        observed: torch.Tensor | None = None,
        extras: dict[str, torch.Tensor | None] | None = None,
    ):
        super().__init__(model, guide, data, actions, observed, extras)
        self.elbo = elbo
        self.enumerate_model = enumerate_model

    def _scaled(self, fn, num_rows: int):
        return poutine.scale(fn, scale=1.0 / num_rows)

    def _elbo_args(self, batch: torch.Tensor, num_rows: int) -> tuple[tuple, dict]:
        model = config_enumerate(self.model, default="parallel") if self.enumerate_model else self.model
        args = (self._scaled(model, num_rows), self._scaled(self.guide, num_rows), *self.model_args(), batch)
        return args, {"num_rows": num_rows, "observed": self.observed, **self.extras}

    def forward(self, batch: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, loss)``: the differentiable loss on rows ``batch`` (what a data-parallel
        wrapper calls, so that its gradient hooks see the backward pass)."""
        if not hasattr(type(self.elbo), "differentiable_loss"):
            raise ValueError(
                "guide_gradient='score_function' has no differentiable loss to share across processes; "
                "use guide_gradient='enumerate' (or one device)"
            )
        args, kwargs = self._elbo_args(batch, num_rows)
        loss = self.elbo.differentiable_loss(*args, **kwargs)
        return loss, loss

    def loss_and_grads(self, batch: torch.Tensor, *, num_rows: int) -> float:
        args, kwargs = self._elbo_args(batch, num_rows)
        return self.elbo.loss_and_grads(*args, **kwargs)


class FusedObjective(_DataObjective):
    """The enumerated marginal likelihood in closed form, per training row:
    ``-(mean_batch log sum_groups p(group, y | row) + log p(globals) / num_rows)``.

    Equal to ``TraceEnum_ELBO`` with the groups enumerated (tested); the group table is the model's
    own (:meth:`~pyro_irm.models.base.FeedbackModel.group_log_joint`), summed without the ELBO's
    bookkeeping.
    """

    def __init__(
        self,
        model: FeedbackModel,
        data: FeedbackData,
        actions: torch.Tensor,
        observed: torch.Tensor | None = None,
        extras: dict[str, torch.Tensor | None] | None = None,
    ):
        super().__init__(model, None, data, actions, observed, extras)

    def forward(self, batch: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, loss)`` on rows ``batch``, differentiable."""
        device = self.model.device
        rows, actions, context_rows, logged = (
            gather_rows(t, batch, device)
            for t in (self.data.embeddings, self.actions, self.data.context, self.observed)
        )
        extras = {k: gather_rows(v, batch, device) for k, v in self.extras.items()}
        log_marginal = self.model.log_marginal(rows, actions, context_rows, logged, **extras)
        loss = -(log_marginal.mean() + self.model.global_log_prob() / num_rows)
        return loss, loss

    def loss_and_grads(self, batch: torch.Tensor, *, num_rows: int) -> float:
        loss, _ = self(batch, num_rows)
        loss.backward()
        return loss.item()


def build_objective(
    config: TrainConfig,
    model: FeedbackModel,
    guide: PyroModule,
    data: FeedbackData,
    actions: torch.Tensor,
    nuisance: Nuisance | None = None,
    estimator_config: EstimatorConfig | None = None,
    train_index: torch.Tensor | None = None,
) -> SVIObjective | FusedObjective | LossObjective:
    """The objective for ``config.method`` (and ``config.inference`` for implicitrm) on ``data``."""
    spec = get_estimator(config.method)
    if spec.family == "loss":
        return LossObjective(
            config.method,
            model,
            data,
            actions,
            nuisance or Nuisance(),
            estimator_config or EstimatorConfig(),
            torch.arange(len(data)) if train_index is None else train_index,
            config.seed,
        )
    # Only a latent-group model models o; naive and the oracle treat every row as labelled.
    groups = get_estimator(config.method).latent_groups
    observed = data.observed if groups else None
    extras = model_extras(config, data) if groups else {}
    args = (data, actions, observed, extras)
    if not groups:
        return SVIObjective(model, guide, Trace_ELBO(max_plate_nesting=1), False, *args)
    if config.inference == "fused":
        return FusedObjective(model, *args)
    if config.inference == "enumerate":
        return SVIObjective(model, guide, TraceEnum_ELBO(max_plate_nesting=1), True, *args)
    if not isinstance(guide, StratificationGuide):
        raise TypeError("inference='amortized' needs a StratificationGuide")
    if config.guide_gradient == "enumerate":
        return SVIObjective(model, guide, TraceEnum_ELBO(max_plate_nesting=1), False, *args)
    return SVIObjective(model, guide, TraceGraph_ELBO(max_plate_nesting=1), False, *args)


def model_extras(config: TrainConfig, data: FeedbackData) -> dict[str, torch.Tensor | None]:
    """The four-group model's row data besides embeddings, actions and context: user indices, and
    the explicit labels only when the fit is told to use them (``fit_labels``)."""
    return {
        "users": data.users,
        "labels": data.labels if config.fit_labels else None,
    }


def build_guide(config: TrainConfig, model: FeedbackModel) -> PyroModule:
    """An amortized stratification guide for ``inference='amortized'``, else the empty guide."""
    if get_estimator(config.method).latent_groups and config.inference == "amortized":
        return StratificationGuide(model, enumerate_groups=config.guide_gradient == "enumerate")
    return EmptyGuide()


@torch.no_grad()
def heldout_elbo(
    model: FeedbackModel,
    guide: PyroModule,
    embeddings: torch.Tensor,
    actions: torch.Tensor,
    context: torch.Tensor | None,
    index: torch.Tensor,
    chunk_rows: int = 65_536,
    observed: torch.Tensor | None = None,
    **extras: torch.Tensor | None,
) -> float:
    """Exact ELBO per row on rows ``index``: ``mean_i sum_g q_g (log p(g, y_i) - log q_g)``.

    With the exact posterior as q (enumeration, naive, oracle) this is the marginal log-likelihood;
    with the amortized guide it is that guide's ELBO, summed over the four groups, not sampled.
    With ``observed`` (an observational log) the likelihood is that of (o, y). ``extras``
    (``users``, ``labels``) are ``(N,)`` row data the model takes.
    """
    device = model.device
    total = 0.0
    for chunk in index.split(chunk_rows):
        rows, chunk_actions, context_rows, logged = (
            gather_rows(t, chunk, device) for t in (embeddings, actions, context, observed)
        )
        chunk_extras = {k: gather_rows(v, chunk, device) for k, v in extras.items() if v is not None}
        log_joint = model.group_log_joint(rows, chunk_actions, context_rows, logged, **chunk_extras)
        if isinstance(guide, StratificationGuide):
            log_q = torch.log_softmax(guide.group_logits(rows, chunk_actions, context_rows, logged), dim=-1)
            q = log_q.exp()
            terms = torch.where(q > 0, q * (log_joint - log_q), torch.zeros_like(q))
            total += terms.sum().item()
        else:
            total += torch.logsumexp(log_joint, dim=-1).sum().item()
    return total / len(index)
