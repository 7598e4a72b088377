"""The training objective of each (method, inference) pair, as one torch module.

Every objective holds the model and guide (so ``parameters()`` is what the optimizer updates) and
offers ``loss_and_grads(*model_args) -> float``: the negative ELBO per training row, with its
gradient accumulated. ``TraceGraph_ELBO`` has no differentiable loss (its gradient comes from a
surrogate), which is why the interface is ``loss_and_grads`` rather than a loss tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, config_enumerate
from pyro.nn import PyroModule
from torch import nn

from pyro_irm.inference.config import TrainConfig
from pyro_irm.models.base import FeedbackModel, gather_rows
from pyro_irm.models.guides import EmptyGuide, StratificationGuide


class SVIObjective(nn.Module):
    """``-ELBO / num_rows`` of a Pyro (model, guide) pair under one of Pyro's ELBO estimators."""

    def __init__(self, model: nn.Module, guide: nn.Module, elbo: ELBO, enumerate_model: bool):
        super().__init__()
        self.model = model
        self.guide = guide
        self.elbo = elbo
        self.enumerate_model = enumerate_model

    def _scaled(self, fn, num_rows: int):
        return poutine.scale(fn, scale=1.0 / num_rows)

    def loss_and_grads(self, *args: Any, num_rows: int, **kwargs: Any) -> float:
        model = config_enumerate(self.model, default="parallel") if self.enumerate_model else self.model
        return self.elbo.loss_and_grads(
            self._scaled(model, num_rows),
            self._scaled(self.guide, num_rows),
            *args,
            num_rows=num_rows,
            **kwargs,
        )


class FusedObjective(nn.Module):
    """The enumerated marginal likelihood in closed form: ``-mean log sum_groups p(group, y | row)``.

    Equal to ``TraceEnum_ELBO`` with the groups enumerated (tested), without Pyro's tracing.
    """

    def __init__(self, model: FeedbackModel):
        super().__init__()
        self.model = model
        self.guide = None

    def loss_and_grads(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        context: torch.Tensor | None,
        batch_indices: torch.Tensor,
        *,
        num_rows: int,
    ) -> float:
        device = self.model.device
        rows, actions, context_rows = (
            gather_rows(t, batch_indices, device) for t in (embeddings, labels, context)
        )
        loss = -self.model.log_marginal(rows, actions, context_rows).mean()
        loss.backward()
        return loss.item()


def build_objective(
    config: TrainConfig, model: FeedbackModel, guide: PyroModule
) -> SVIObjective | FusedObjective:
    """The objective for ``config.method`` and ``config.inference``."""
    if config.method != "implicitrm":
        return SVIObjective(model, guide, Trace_ELBO(max_plate_nesting=1), enumerate_model=False)
    if config.inference == "fused":
        return FusedObjective(model)
    if config.inference == "enumerate":
        elbo = TraceEnum_ELBO(max_plate_nesting=1)
        return SVIObjective(model, guide, elbo, enumerate_model=True)
    if not isinstance(guide, StratificationGuide):
        raise TypeError("inference='amortized' needs a StratificationGuide")
    if config.guide_gradient == "enumerate":
        return SVIObjective(model, guide, TraceEnum_ELBO(max_plate_nesting=1), enumerate_model=False)
    return SVIObjective(model, guide, TraceGraph_ELBO(max_plate_nesting=1), enumerate_model=False)


def build_guide(config: TrainConfig, model: FeedbackModel) -> PyroModule:
    """An amortized stratification guide for ``inference='amortized'``, else the empty guide."""
    if config.method == "implicitrm" and config.inference == "amortized":
        return StratificationGuide(
            model.embedding_dim,
            model.context_dim,
            model.config,
            model.channel,
            enumerate_groups=config.guide_gradient == "enumerate",
        )
    return EmptyGuide()


@torch.no_grad()
def heldout_elbo(
    model: FeedbackModel,
    guide: PyroModule,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    context: torch.Tensor | None,
    index: torch.Tensor,
    chunk_rows: int = 65_536,
) -> float:
    """Exact ELBO per row on rows ``index``: ``mean_i sum_g q_g (log p(g, y_i) - log q_g)``.

    With the exact posterior as q (enumeration, naive, oracle) this is the marginal log-likelihood;
    with the amortized guide it is that guide's ELBO, summed over the four groups, not sampled.
    """
    device = model.device
    total = 0.0
    for chunk in index.split(chunk_rows):
        rows, actions, context_rows = (gather_rows(t, chunk, device) for t in (embeddings, labels, context))
        log_joint = model.group_log_joint(rows, actions, context_rows)
        if isinstance(guide, StratificationGuide):
            log_q = torch.log_softmax(guide.group_logits(rows, actions, context_rows), dim=-1)
            q = log_q.exp()
            terms = torch.where(q > 0, q * (log_joint - log_q), torch.zeros_like(q))
            total += terms.sum().item()
        else:
            total += torch.logsumexp(log_joint, dim=-1).sum().item()
    return total / len(index)
