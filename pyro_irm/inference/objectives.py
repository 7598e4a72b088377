"""The training objective of each (method, inference) pair, as one torch module.

Every objective holds the model and guide (so ``parameters()`` is what the optimizer updates)
and the training rows (one :class:`~pyro_irm.models.base.Rows`), and offers
``loss_and_grads(batch_rows, num_rows=...) -> float`` (the negative ELBO or the risk per training
row, with its gradient accumulated) and ``validation_score(rows) -> float`` (higher is better;
computed from observed data only). ``TraceGraph_ELBO`` has no differentiable loss (its gradient
comes from a surrogate), which is why the interface is ``loss_and_grads`` rather than a loss tensor.
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
from pyro_irm.models.base import FeedbackModel, Rows
from pyro_irm.models.guides import EmptyGuide, StratificationGuide


class _RowsObjective(nn.Module):
    """Holds the training rows (one :class:`~pyro_irm.models.base.Rows`); subclasses implement
    :meth:`loss_and_grads` on row indices."""

    def __init__(self, model: FeedbackModel, guide: nn.Module | None, rows: Rows):
        super().__init__()
        self.model = model
        self.guide = guide
        self.rows = rows
        # A training-only penalty on rows (an engagement prior, inference.remedies), or None.
        self.penalty: nn.Module | None = None

    def _penalty(self, batch: torch.Tensor) -> torch.Tensor | None:
        return None if self.penalty is None else self.penalty(batch)

    def validation_score(self, index: torch.Tensor) -> float:
        """The exact held-out ELBO per row on rows ``index`` (higher is better)."""
        return heldout_elbo(self.model, self.guide, self.rows, index)


class SVIObjective(_RowsObjective):
    """``-ELBO / num_rows`` of a Pyro (model, guide) pair under one of Pyro's ELBO estimators."""

    def __init__(self, model: FeedbackModel, guide: nn.Module, elbo: ELBO, enumerate_model: bool, rows: Rows):
        super().__init__(model, guide, rows)
        self.elbo = elbo
        self.enumerate_model = enumerate_model

    def _scaled(self, fn, num_rows: int):
        return poutine.scale(fn, scale=1.0 / num_rows)

    def _elbo_args(self, batch: torch.Tensor, num_rows: int) -> tuple[tuple, dict]:
        model = config_enumerate(self.model, default="parallel") if self.enumerate_model else self.model
        rows = self.rows
        args = (self._scaled(model, num_rows), self._scaled(self.guide, num_rows))
        args += (rows.embeddings, rows.actions, rows.context, batch)
        return args, {"num_rows": num_rows, "observed": rows.observed, **rows.extras}

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
        if (penalty := self._penalty(batch)) is not None:
            loss = loss + penalty
        return loss, loss

    def loss_and_grads(self, batch: torch.Tensor, *, num_rows: int) -> float:
        args, kwargs = self._elbo_args(batch, num_rows)
        value = self.elbo.loss_and_grads(*args, **kwargs)
        if (penalty := self._penalty(batch)) is not None:
            penalty.backward()
            value += penalty.item()
        return value


class FusedObjective(_RowsObjective):
    """The enumerated marginal likelihood in closed form, per training row:
    ``-(mean_batch log sum_groups p(group, y | row) + log p(globals) / num_rows)``.

    Equal to ``TraceEnum_ELBO`` with the groups enumerated (tested); the group table is the model's
    own (:meth:`~pyro_irm.models.base.FeedbackModel.group_log_joint`), summed without the ELBO's
    bookkeeping.
    """

    def __init__(self, model: FeedbackModel, rows: Rows):
        super().__init__(model, None, rows)

    def forward(self, batch: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, loss)`` on rows ``batch``, differentiable."""
        batch_rows = self.rows.take(batch, self.model.device)
        log_marginal = torch.logsumexp(batch_rows.group_log_joint(self.model), dim=-1)
        loss = -(log_marginal.mean() + self.model.global_log_prob() / num_rows)
        if (penalty := self._penalty(batch)) is not None:
            loss = loss + penalty
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
    rows = training_rows(config, data, actions)
    if not spec.latent_groups:
        return SVIObjective(model, guide, Trace_ELBO(max_plate_nesting=1), False, rows)
    if config.inference == "fused":
        return FusedObjective(model, rows)
    if config.inference == "enumerate":
        return SVIObjective(model, guide, TraceEnum_ELBO(max_plate_nesting=1), True, rows)
    if not isinstance(guide, StratificationGuide):
        raise TypeError("inference='amortized' needs a StratificationGuide")
    if config.guide_gradient == "enumerate":
        return SVIObjective(model, guide, TraceEnum_ELBO(max_plate_nesting=1), False, rows)
    return SVIObjective(model, guide, TraceGraph_ELBO(max_plate_nesting=1), False, rows)


def training_rows(config: TrainConfig, data: FeedbackData, actions: torch.Tensor) -> Rows:
    """The rows ``config.method``'s model reads: ``actions`` (the method's observed actions) and
    the context; for a latent-group model also the logged o, the users, and the explicit labels
    when the fit is told to use them (``fit_labels``). Naive and the oracle treat every row as
    labelled and see no users."""
    if not get_estimator(config.method).latent_groups:
        return Rows(data.embeddings, actions, data.context)
    labels = data.labels if config.fit_labels else None
    return Rows(data.embeddings, actions, data.context, data.observed, data.users, labels)


def build_guide(config: TrainConfig, model: FeedbackModel) -> PyroModule:
    """An amortized stratification guide for ``inference='amortized'``, else the empty guide."""
    if get_estimator(config.method).latent_groups and config.inference == "amortized":
        return StratificationGuide(model, enumerate_groups=config.guide_gradient == "enumerate")
    return EmptyGuide()


@torch.no_grad()
def heldout_elbo(
    model: FeedbackModel, guide: PyroModule | None, rows: Rows, index: torch.Tensor, chunk_rows: int = 65_536
) -> float:
    """Exact ELBO per row on rows ``index`` of ``rows``: ``mean_i sum_g q_g (log p(g, y_i) - log q_g)``.

    With the exact posterior as q (enumeration, naive, oracle) this is the marginal log-likelihood;
    with the amortized guide it is that guide's ELBO, summed over the four groups, not sampled.
    With a logged o (an observational log) the likelihood is that of (o, y).
    """
    total = 0.0
    for chunk in index.split(chunk_rows):
        batch = rows.take(chunk, model.device)
        log_joint = batch.group_log_joint(model)
        if isinstance(guide, StratificationGuide):
            logits = guide.group_logits(batch.embeddings, batch.actions, batch.context, batch.observed)
            log_q = torch.log_softmax(logits, dim=-1)
            q = log_q.exp()
            terms = torch.where(q > 0, q * (log_joint - log_q), torch.zeros_like(q))
            total += terms.sum().item()
        else:
            total += torch.logsumexp(log_joint, dim=-1).sum().item()
    return total / len(index)
