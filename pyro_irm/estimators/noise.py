"""CausalRM: a loss corrected for class-conditional flips of the feedback, weighted by the
propensity in an observational log. In an implicit log every shown row counts as observed and a
silent positive as a flipped label, with flip rates from anchor points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pyro_irm.estimators.base import Estimator, Family, RiskBatch, Setting
from pyro_irm.estimators.weighting import weighted_terms

if TYPE_CHECKING:
    import torch

    from pyro_irm.estimators.config import EstimatorConfig

_WEIGHTING_NEEDS = {"ips": {"propensity"}, "snips": {"propensity"}, "dr": {"propensity", "imputation"}}


@dataclass(frozen=True)
class NoiseCorrected(Estimator):
    family: ClassVar[Family] = "loss"

    def needs(self, setting: Setting, config: EstimatorConfig) -> frozenset[str]:
        if setting != "observational":
            return frozenset({"flip_rates"})
        return frozenset({"flip_rates", *_WEIGHTING_NEEDS[config.causalrm_weighting]})

    def weighting(self, config: EstimatorConfig) -> str | None:
        return config.causalrm_weighting

    def risk(self, batch: RiskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        from pyro_irm.estimators.losses import noise_corrected_loss

        eps1, eps0 = batch.nuisance.eps1, batch.nuisance.eps0
        per_row = noise_corrected_loss(batch.logits, batch.actions, eps1, eps0)
        if not batch.observational:
            return per_row.mean(), per_row.mean()
        weighting = batch.config.causalrm_weighting
        imputed = None
        if weighting == "dr":
            value, logits = batch.imputation, batch.logits
            imputed = value * noise_corrected_loss(logits, torch.ones_like(value), eps1, eps0) + (
                1 - value
            ) * noise_corrected_loss(logits, torch.zeros_like(value), eps1, eps0)
        terms = weighted_terms(per_row, imputed, batch, weighting)
        return terms.mean(), terms.mean()
