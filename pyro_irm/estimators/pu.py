"""Positive-unlabelled risks: the rows with an action are labelled positives, every row is the
unlabelled sample (du Plessis et al. 2015; Kiryo et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pyro_irm.estimators.base import Estimator, Family, RiskBatch, Setting

if TYPE_CHECKING:
    import torch

    from pyro_irm.estimators.config import EstimatorConfig


@dataclass(frozen=True)
class UnbiasedPU(Estimator):
    """uPU: the two parts of the PU risk summed; unbiased when the acting positives are a uniform
    sample of the positives, and free to go negative (it overfits)."""

    family: ClassVar[Family] = "loss"
    risk_unbounded_below: ClassVar[bool] = True

    def needs(self, setting: Setting, config: EstimatorConfig) -> frozenset[str]:
        return frozenset({"class_prior"})

    def risk(self, batch: RiskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        from pyro_irm.estimators.losses import pu_risks

        positive, negative = pu_risks(batch.logits, batch.actions, batch.nuisance.class_prior)
        return positive + negative, positive + negative


@dataclass(frozen=True)
class NonNegativePU(UnbiasedPU):
    """nnPU: the negative part clamped at zero; when it falls below ``-nnpu_beta`` the step climbs
    it back (scaled by ``nnpu_gamma``) instead of descending the risk."""

    risk_unbounded_below: ClassVar[bool] = False

    def risk(self, batch: RiskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        from pyro_irm.estimators.losses import pu_risks

        positive, negative = pu_risks(batch.logits, batch.actions, batch.nuisance.class_prior)
        risk = positive + negative.clamp_min(0.0)
        if negative < -batch.config.nnpu_beta:
            return -batch.config.nnpu_gamma * negative, risk
        return positive + negative, risk
