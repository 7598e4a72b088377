"""A loss-family estimator as a training objective: the mean of its risk over minibatches of rows,
with the propensity clipped (and for SNIPS weighting self-normalized) once over the training rows,
and partner rows drawn for the pairwise estimators."""

from __future__ import annotations

import logging

import torch
from torch import nn

from pyro_irm.data.feedback import FeedbackData
from pyro_irm.estimators import get_estimator
from pyro_irm.estimators.base import RiskBatch
from pyro_irm.estimators.config import EstimatorConfig
from pyro_irm.estimators.nuisance import Nuisance
from pyro_irm.models.base import FeedbackModel, gather_rows

logger = logging.getLogger(__name__)
# Above this inverse-propensity weight a handful of rows dominate a weighted risk.
_EXTREME_WEIGHT = 1e3


class PromptPartners:
    """Draws, for each row, a partner row of the same prompt among ``rows`` (UBPR's pairs).

    Without prompt ids every row of ``rows`` belongs to one prompt. A row alone in its prompt is
    its own partner, which gives its pair a zero gradient.
    """

    def __init__(self, prompt_ids: torch.Tensor | None, rows: torch.Tensor, num_rows: int):
        rows = rows.sort().values
        keys = torch.zeros_like(rows) if prompt_ids is None else prompt_ids[rows]
        order = torch.argsort(keys, stable=True)
        self.sorted_rows = rows[order]
        _, counts = torch.unique_consecutive(keys[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        group = torch.repeat_interleave(torch.arange(len(counts)), counts)
        self.start = torch.full((num_rows,), -1, dtype=torch.long)
        self.size = torch.zeros(num_rows, dtype=torch.long)
        self.offset = torch.zeros(num_rows, dtype=torch.long)
        self.start[self.sorted_rows] = starts[group]
        self.size[self.sorted_rows] = counts[group]
        self.offset[self.sorted_rows] = torch.arange(len(rows)) - starts[group]

    def sample(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B,)`` partner rows of the rows ``batch``, uniformly among the other rows of each prompt."""
        size, own = self.size[batch], self.offset[batch]
        if (size == 0).any():
            raise ValueError("PromptPartners.sample: a row outside the rows it was built on")
        others = (size - 1).clamp_min(1)
        draw = (torch.rand(len(batch), generator=generator) * others).long()
        draw = torch.where(size > 1, draw + (draw >= own).long(), own)
        return self.sorted_rows[self.start[batch] + draw]


class LossObjective(nn.Module):
    """The mean risk of a loss-family method over minibatches of rows, with its gradient.

    Args:
        method: a loss-family name in :data:`pyro_irm.estimators.ESTIMATORS`.
        model: holds the reward network ``f``.
        data: the training data; ``actions`` its actions.
        nuisance: the quantities the method needs.
        config: clipping, weighting and nnPU choices.
        train_index: rows the fit trains on (the self-normalization constant is taken over them).
    """

    def __init__(
        self,
        method: str,
        model: FeedbackModel,
        data: FeedbackData,
        actions: torch.Tensor,
        nuisance: Nuisance,
        config: EstimatorConfig,
        train_index: torch.Tensor,
        seed: int = 0,
    ):
        super().__init__()
        self.model = model
        self.guide = None
        self.method = method
        self.estimator = get_estimator(method)
        self.data = data
        self.actions = actions
        self.config = config
        self.observational = data.observed is not None
        self.nuisance = nuisance
        self.propensity = self._propensity(nuisance, train_index)
        self.num_rows = len(data)
        self.seed = seed
        self._partners: dict[str, PromptPartners] = {}
        if self.estimator.pairwise:
            self._partners["train"] = PromptPartners(data.prompt_ids, train_index, len(data))

    def _propensity(self, nuisance: Nuisance, train_index: torch.Tensor) -> torch.Tensor | None:
        """The clipped (and for SNIPS self-normalized) ``(N,)`` propensity the method weights by."""
        needs = self.estimator.needs(self.data.setting, self.config)
        if not needs & {"propensity", "relative_propensity"}:
            return None  # nuisance shared with other estimators may hold one this one never weights by
        uses_relative = (
            self.estimator.uses_relative_propensity(self.config) and nuisance.relative_propensity is not None
        )
        propensity = nuisance.relative_propensity if uses_relative else nuisance.propensity
        if propensity is None:
            return None
        self._report_clipping(propensity[train_index].float())
        propensity = propensity.float().clamp(min=self.config.propensity_clip, max=1.0)
        if self.estimator.weighting(self.config) == "snips":
            rows = train_index
            if self.observational:
                # mean(o / p) over the training rows is 1 after rescaling.
                scale = (self.data.observed[rows] / propensity[rows]).mean()
            else:
                # mean(y / p) over the training rows is the class prior after rescaling.
                scale = (self.actions[rows] / propensity[rows]).mean() / nuisance.class_prior
            propensity = propensity * scale.clamp_min(1e-6)
        return propensity

    def _report_clipping(self, propensity: torch.Tensor) -> None:
        """Count the training rows whose propensity is raised to the clip, say so, and record it
        (``nuisance.sources``, which ``run.json`` keeps)."""
        clip = self.config.propensity_clip
        below = int((propensity < clip).sum())
        largest_weight = 1.0 / max(float(propensity.min()), clip)
        note = (
            f"{below} of {len(propensity)} training rows ({below / max(len(propensity), 1):.1%}) had a "
            f"propensity below propensity_clip={clip:g} (smallest {float(propensity.min()):.3g}) and were "
            f"raised to it; the largest weight 1/p is {largest_weight:.3g}"
        )
        self.nuisance.sources["propensity_clipping"] = note
        if below:
            logger.warning("%s: %s", self.method, note)
        if largest_weight > _EXTREME_WEIGHT:
            logger.warning(
                "%s: propensity weights up to %.3g let a few rows dominate the risk (its variance grows "
                "with the weight); raise propensity_clip (now %g)",
                self.method,
                largest_weight,
                clip,
            )

    def _rows(self, values: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
        return gather_rows(values, index, self.model.device)

    def risk(
        self, index: torch.Tensor, generator: torch.Generator | None = None, partners: str = "train"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(objective, risk)`` on rows ``index``: the tensor to differentiate, and the risk
        estimate itself (they differ only for nnPU's correction step)."""
        pair = {}
        if self.estimator.pairwise:
            partner = self._partners[partners].sample(index, generator)
            pair = {
                "partner_logits": self.model.reward_logits(self._rows(self.data.embeddings, partner)),
                "partner_actions": self._rows(self.actions, partner),
                "partner_propensity": self._rows(self.propensity, partner),
            }
        batch = RiskBatch(
            logits=self.model.reward_logits(self._rows(self.data.embeddings, index)),
            actions=self._rows(self.actions, index),
            nuisance=self.nuisance,
            config=self.config,
            propensity=self._rows(self.propensity, index),
            observed=self._rows(self.data.observed, index),
            imputation=self._rows(self.nuisance.imputation, index),
            **pair,
        )
        return self.estimator.risk(batch)

    def forward(self, batch: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(objective, risk)`` on rows ``batch`` (see :meth:`risk`)."""
        return self.risk(batch)

    def loss_and_grads(self, batch: torch.Tensor, *, num_rows: int) -> float:
        objective, risk = self.risk(batch)
        objective.backward()
        return risk.item()

    @torch.no_grad()
    def validation_score(self, index: torch.Tensor) -> float:
        """Minus the method's own risk on rows ``index`` (higher is better), from observed data only."""
        if self.estimator.pairwise and "validation" not in self._partners:
            self._partners["validation"] = PromptPartners(self.data.prompt_ids, index, self.num_rows)
        generator = torch.Generator().manual_seed(self.seed)
        _, risk = self.risk(index, generator, partners="validation")
        return -risk.item()
