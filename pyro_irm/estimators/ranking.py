"""Pairwise ranking: unbiased Bayesian personalized ranking over pairs of rows of one prompt
(Saito 2020)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pyro_irm.estimators.base import Estimator, Family, RiskBatch, Setting

if TYPE_CHECKING:
    import torch

    from pyro_irm.estimators.config import EstimatorConfig


@dataclass(frozen=True)
class UnbiasedPairwise(Estimator):
    family: ClassVar[Family] = "loss"
    pairwise: ClassVar[bool] = True

    def needs(self, setting: Setting, config: EstimatorConfig) -> frozenset[str]:
        return frozenset({"propensity"})

    def weighting(self, config: EstimatorConfig) -> str | None:
        return self.name

    def risk(self, batch: RiskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        from pyro_irm.estimators.losses import ubpr_loss

        terms = ubpr_loss(
            batch.logits,
            batch.partner_logits,
            batch.actions,
            batch.partner_actions,
            batch.propensity,
            batch.partner_propensity,
        )
        return terms.mean(), terms.mean()
