"""The training objective of each (method, inference) pair, as one torch module.

Every objective holds the model and guide (so ``parameters()`` is what the optimizer updates)
and the training rows (one :class:`~pyro_irm.models.base.Rows`), and offers
``loss_and_grads(batch_rows, num_rows=...) -> float`` (the negative ELBO or the risk per training
row, with its gradient accumulated) and ``validation_score(rows) -> float`` (higher is better;
computed from observed data only). ``TraceGraph_ELBO`` has no differentiable loss (its gradient
comes from a surrogate), which is why the interface is ``loss_and_grads`` rather than a loss tensor.
"""

from __future__ import annotations

from collections.abc import Callable

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
from pyro_irm.models.base import FeedbackModel, Rows, latent_sites
from pyro_irm.models.guides import EmptyGuide, GlobalGuide, ModelGuide, StratificationGuide


class _RowsObjective(nn.Module):
    """Holds the training rows (one :class:`~pyro_irm.models.base.Rows`); subclasses implement
    :meth:`loss_and_grads` on row indices. ``num_train_rows`` scales the global latents' term of
    the held-out score as the training objective scales it."""

    def __init__(
        self, model: FeedbackModel, guide: nn.Module | None, rows: Rows, num_train_rows: int | None = None
    ):
        super().__init__()
        self.model = model
        self.guide = guide
        self.rows = rows
        self.num_train_rows = num_train_rows or len(rows)
        # A training-only penalty on rows (inference.remedies: an engagement prior, the reward
        # decorrelated from the context), or None.
        self.penalty: nn.Module | None = None

    def _penalty(self, batch: torch.Tensor) -> torch.Tensor | None:
        return None if self.penalty is None else self.penalty(batch)

    def validation_score(self, index: torch.Tensor) -> float:
        """The held-out ELBO per row on rows ``index`` with the global latents' term per training
        row: the whole objective (higher is better)."""
        return heldout_elbo(self.model, self.guide, self.rows, index, num_rows=self.num_train_rows)


class SVIObjective(_RowsObjective):
    """``-ELBO / num_rows`` of a Pyro (model, guide) pair under one of Pyro's ELBO estimators."""

    def __init__(
        self,
        model: FeedbackModel,
        guide: nn.Module,
        elbo: ELBO,
        enumerate_model: bool,
        rows: Rows,
        num_train_rows: int | None = None,
    ):
        super().__init__(model, guide, rows, num_train_rows)
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
    ``-(mean_batch log sum_groups p(group, y | row, globals) + (log p(globals) - log q(globals)) / num_rows)``
    at one draw of the globals from their guide (the point itself under MAP).

    Equal to ``TraceEnum_ELBO`` with the groups enumerated (tested); the group table is the model's
    own (:meth:`~pyro_irm.models.base.FeedbackModel.group_log_joint`) and the global term is its
    :meth:`~pyro_irm.models.base.FeedbackModel.model_globals` traced at the guide's draw, summed
    without the ELBO's bookkeeping.
    """

    def __init__(
        self, model: FeedbackModel, guide: nn.Module | None, rows: Rows, num_train_rows: int | None = None
    ):
        super().__init__(model, guide, rows, num_train_rows)

    def forward(self, batch: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, loss)`` on rows ``batch``, differentiable."""
        values, global_term = global_draw(self.model, self.guide)
        batch_rows = self.rows.take(batch, self.model.device)
        log_marginal = torch.logsumexp(batch_rows.group_log_joint(self.model, values), dim=-1)
        loss = -(log_marginal.mean() + global_term / num_rows)
        if (penalty := self._penalty(batch)) is not None:
            loss = loss + penalty
        return loss, loss

    def loss_and_grads(self, batch: torch.Tensor, *, num_rows: int) -> float:
        loss, _ = self(batch, num_rows)
        loss.backward()
        return loss.item()


def global_draw(
    model: FeedbackModel, guide: nn.Module | None
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One draw of the global latents from ``guide``'s global part, as ``({site: value},
    log p(globals) - log q(globals))``: the guide traced, and the model's
    :meth:`~pyro_irm.models.base.FeedbackModel.model_globals` replayed at its values. Without a
    global guide, the model's point values and their log prior."""
    globals_guide = guide.globals_guide if isinstance(guide, ModelGuide) else None
    if globals_guide is None:
        values = model.point_values()
        return values, model.global_log_prob(values)
    guide_trace = poutine.trace(globals_guide).get_trace()
    model_trace = poutine.trace(poutine.replay(model.model_globals, trace=guide_trace)).get_trace()
    values = {name: model_trace.nodes[name]["value"] for name in latent_sites(model_trace)}
    return values, model_trace.log_prob_sum() - guide_trace.log_prob_sum()


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
    trained = len(data) if train_index is None else len(train_index)
    if not spec.latent_groups:
        return SVIObjective(model, guide, Trace_ELBO(max_plate_nesting=1), False, rows, trained)
    if config.inference == "fused":
        return FusedObjective(model, guide, rows, trained)
    if config.inference == "enumerate":
        return SVIObjective(model, guide, TraceEnum_ELBO(max_plate_nesting=1), True, rows, trained)
    if not isinstance(rows_guide(guide), StratificationGuide):
        raise TypeError("inference='amortized' needs a StratificationGuide")
    if config.guide_gradient == "enumerate":
        return SVIObjective(model, guide, TraceEnum_ELBO(max_plate_nesting=1), False, rows, trained)
    return SVIObjective(model, guide, TraceGraph_ELBO(max_plate_nesting=1), False, rows, trained)


def training_rows(config: TrainConfig, data: FeedbackData, actions: torch.Tensor) -> Rows:
    """The rows ``config.method``'s model reads: ``actions`` (the method's observed actions) and
    the context; for a latent-group model also the logged o, the users, and the explicit labels
    when the fit is told to use them (``fit_labels``). Naive and the oracle treat every row as
    labelled and see no users."""
    if not get_estimator(config.method).latent_groups:
        return Rows(data.embeddings, actions, data.context)
    labels = data.labels if config.fit_labels else None
    return Rows(data.embeddings, actions, data.context, data.observed, data.users, labels)


def build_guide(
    config: TrainConfig,
    model: FeedbackModel,
    global_guide: nn.Module | Callable[[FeedbackModel], nn.Module] | None = None,
) -> ModelGuide:
    """The whole guide: ``global_guide`` (a module, or a function of the model that builds one;
    default a :class:`GlobalGuide` of ``config.global_guide``) for the global latents where the
    model has any, and for the rows an amortized stratification guide under
    ``inference='amortized'``, else none (the groups are summed out)."""
    if get_estimator(config.method).latent_groups and config.inference == "amortized":
        rows = StratificationGuide(model, enumerate_groups=config.guide_gradient == "enumerate")
    else:
        rows = EmptyGuide()
    if callable(global_guide) and not isinstance(global_guide, nn.Module):
        global_guide = global_guide(model)
    if global_guide is None and model.point_values():
        global_guide = GlobalGuide(model, config.global_guide)
    return ModelGuide(global_guide, rows)


def parameter_groups(parameters, guide: nn.Module | None, config: TrainConfig) -> list[dict]:
    """Optimizer groups: ``parameters`` (the model's and the guide's, say) at ``config``'s learning
    rate, except the global latents' guide's, at ``global_learning_rate`` and without weight decay
    (their prior is the model's)."""
    globals_guide = guide.globals_guide if isinstance(guide, ModelGuide) else None
    own = list(globals_guide.parameters()) if globals_guide is not None else []
    owned = {id(p) for p in own}
    groups = [{"params": [p for p in parameters if id(p) not in owned], "lr": config.learning_rate}]
    if own:
        rate = config.global_learning_rate or config.learning_rate
        groups.append({"params": own, "lr": rate, "weight_decay": 0.0})
    return groups


def rows_guide(guide: nn.Module | None) -> nn.Module | None:
    """The rows' part of a guide (a :class:`ModelGuide`'s, or the guide itself)."""
    return guide.rows_guide if isinstance(guide, ModelGuide) else guide


@torch.no_grad()
def heldout_elbo(
    model: FeedbackModel,
    guide: PyroModule | None,
    rows: Rows,
    index: torch.Tensor,
    chunk_rows: int = 65_536,
    num_rows: int | None = None,
    particles: int = 8,
) -> float:
    """ELBO per row on rows ``index`` of ``rows``, the groups summed exactly:
    ``mean_i sum_g q_g (log p(g, y_i | globals) - log q_g)``, plus, with ``num_rows`` (the training
    rows), the global latents' ``(log p(globals) - log q(globals)) / num_rows`` as the objective
    scales it; averaged over ``particles`` draws of a global guide that is not a point mass
    (seeded, so the score is the same each epoch).

    With the exact posterior as q (enumeration, naive, oracle) the rows' part is the marginal
    log-likelihood; with the amortized guide it is that guide's ELBO, summed over the four groups,
    not sampled. With a logged o (an observational log) the likelihood is that of (o, y).
    """
    globals_guide = guide.globals_guide if isinstance(guide, ModelGuide) else None
    deterministic = globals_guide is None or getattr(globals_guide, "deterministic", False)
    draws = 1 if deterministic else particles
    local = rows_guide(guide)
    total = 0.0
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(0)
        for _ in range(draws):
            values, global_term = global_draw(model, guide)
            rows_total = 0.0
            for chunk in index.split(chunk_rows):
                batch = rows.take(chunk, model.device)
                log_joint = batch.group_log_joint(model, values)
                if isinstance(local, StratificationGuide):
                    logits = local.group_logits(
                        batch.embeddings, batch.actions, batch.context, batch.observed
                    )
                    log_q = torch.log_softmax(logits, dim=-1)
                    q = log_q.exp()
                    terms = torch.where(q > 0, q * (log_joint - log_q), torch.zeros_like(q))
                    rows_total += terms.sum().item()
                else:
                    rows_total += torch.logsumexp(log_joint, dim=-1).sum().item()
            total += rows_total / len(index) + (global_term.item() / num_rows if num_rows else 0.0)
    return total / draws
