"""The loss family: each estimator's risk on a set of rows, from the losses of
:mod:`pyro_irm.models.losses` and the nuisance quantities of :mod:`pyro_irm.inference.nuisance`.

In an implicit log (o latent) the action y = r * o is the only signal:

* ``upu`` / ``nnpu``: the y = 1 rows are the labelled positives, every row the unlabelled sample;
* ``ips`` / ``relmf``: the unbiased pointwise loss ``(y / p) l(1) + (1 - y / p) l(0)`` with the
  configured propensity (ips) or Rel-MF's popularity propensity (relmf);
* ``snips``: the same with ``p`` rescaled by one constant so that ``mean(y / p)`` equals the class
  prior (the self-normalized estimator, robust to a propensity model off by a constant factor);
* ``causalrm``: every shown row counts as observed and a silent positive as a flipped label, so the
  estimator is CausalRM's noise-corrected loss with flip rates from anchor points;
* ``ubpr``: the propensity-weighted pairwise loss over pairs of rows of one prompt.

In an observational log (o logged, y noisy where o = 1), ``ips``, ``snips`` and ``dr`` weight the
loss of the logged value by ``o / p``, and ``causalrm`` weights its noise-corrected loss the same
way (``EstimatorConfig.causalrm_weighting``).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from pyro_irm.data.feedback import FeedbackData
from pyro_irm.inference.nuisance import EstimatorConfig, Nuisance
from pyro_irm.models.base import FeedbackModel, gather_rows
from pyro_irm.models.losses import (
    doubly_robust_loss,
    implicit_ips_loss,
    label_loss,
    noise_corrected_loss,
    observed_ips_loss,
    pu_risks,
    ubpr_loss,
)

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
        method: a loss-family name in :data:`pyro_irm.inference.methods.METHODS`.
        model: holds the reward network ``f``.
        data: the training data; ``labels`` its actions.
        nuisance: the quantities the method needs.
        config: clipping, weighting and nnPU choices.
        train_index: rows the fit trains on (the self-normalization constant is taken over them).
    """

    def __init__(
        self,
        method: str,
        model: FeedbackModel,
        data: FeedbackData,
        labels: torch.Tensor,
        nuisance: Nuisance,
        config: EstimatorConfig,
        train_index: torch.Tensor,
        seed: int = 0,
    ):
        super().__init__()
        self.model = model
        self.guide = None
        self.method = method
        self.data = data
        self.labels = labels
        self.config = config
        self.observational = data.observed is not None
        self.nuisance = nuisance
        self.propensity = self._propensity(nuisance, train_index)
        self.num_rows = len(data)
        self.seed = seed
        self._partners: dict[str, PromptPartners] = {}
        if method == "ubpr":
            self._partners["train"] = PromptPartners(data.prompt_ids, train_index, len(data))

    def _propensity(self, nuisance: Nuisance, train_index: torch.Tensor) -> torch.Tensor | None:
        """The clipped (and for SNIPS self-normalized) ``(N,)`` propensity the method weights by."""
        uses_relative = self.method == "relmf" and nuisance.relative_propensity is not None
        propensity = nuisance.relative_propensity if uses_relative else nuisance.propensity
        if propensity is None:
            return None
        self._report_clipping(propensity[train_index].float())
        propensity = propensity.float().clamp(min=self.config.propensity_clip, max=1.0)
        weighting = self.config.causalrm_weighting if self.method == "causalrm" else self.method
        if weighting == "snips":
            rows = train_index
            if self.observational:
                # mean(o / p) over the training rows is 1 after rescaling.
                scale = (self.data.observed[rows] / propensity[rows]).mean()
            else:
                # mean(y / p) over the training rows is the class prior after rescaling.
                scale = (self.labels[rows] / propensity[rows]).mean() / nuisance.class_prior
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
        logits = self.model.reward_logits(self._rows(self.data.embeddings, index))
        actions = self._rows(self.labels, index)
        method = self.method
        if method in ("upu", "nnpu"):
            positive, negative = pu_risks(logits, actions, self.nuisance.class_prior)
            if method == "upu":
                return positive + negative, positive + negative
            risk = positive + negative.clamp_min(0.0)
            if negative < -self.config.nnpu_beta:
                return -self.config.nnpu_gamma * negative, risk
            return positive + negative, risk
        propensity = self._rows(self.propensity, index)
        if method == "ubpr":
            partner = self._partners[partners].sample(index, generator)
            partner_logits = self.model.reward_logits(self._rows(self.data.embeddings, partner))
            terms = ubpr_loss(
                logits,
                partner_logits,
                actions,
                self._rows(self.labels, partner),
                propensity,
                self._rows(self.propensity, partner),
            )
            return terms.mean(), terms.mean()
        if method == "relmf" or (method in ("ips", "snips") and not self.observational):
            terms = implicit_ips_loss(logits, actions, propensity)
            return terms.mean(), terms.mean()
        if method == "causalrm":
            rho01, rho10 = self.nuisance.rho01, self.nuisance.rho10
            per_row = noise_corrected_loss(logits, actions, rho01, rho10)
            if not self.observational:
                return per_row.mean(), per_row.mean()
            imputed = None
            if self.config.causalrm_weighting == "dr":
                value = self._rows(self.nuisance.imputation, index)
                imputed = value * noise_corrected_loss(logits, torch.ones_like(value), rho01, rho10) + (
                    1 - value
                ) * noise_corrected_loss(logits, torch.zeros_like(value), rho01, rho10)
            weighting = self.config.causalrm_weighting
        else:  # ips, snips, dr on an observational log
            per_row = label_loss(logits, actions)
            imputed = None
            if method == "dr":
                value = self._rows(self.nuisance.imputation, index)
                imputed = value * label_loss(logits, 1.0) + (1 - value) * label_loss(logits, 0.0)
            weighting = method
        observed = self._rows(self.data.observed, index)
        if weighting == "dr":
            terms = doubly_robust_loss(per_row, imputed, observed, propensity)
        else:
            terms = observed_ips_loss(per_row, observed, propensity)
        return terms.mean(), terms.mean()

    def loss_and_grads(self, batch: torch.Tensor, *, num_rows: int) -> float:
        objective, risk = self.risk(batch)
        objective.backward()
        return risk.item()

    @torch.no_grad()
    def validation_score(self, index: torch.Tensor) -> float:
        """Minus the method's own risk on rows ``index`` (higher is better), from observed data only."""
        if self.method == "ubpr" and "validation" not in self._partners:
            self._partners["validation"] = PromptPartners(self.data.prompt_ids, index, self.num_rows)
        generator = torch.Generator().manual_seed(self.seed)
        _, risk = self.risk(index, generator, partners="validation")
        return -risk.item()
