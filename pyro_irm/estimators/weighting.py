"""Propensity weighting. In an implicit log (o latent) the action y = r * o is weighted by 1 / p
into the unbiased pointwise loss ``(y / p) l(1) + (1 - y / p) l(0)``; in an observational log
(o logged, y the feedback where o = 1) the loss of the logged value is weighted by ``o / p``, or
corrected by an imputation (doubly robust)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pyro_irm.estimators.base import Estimator, Family, RiskBatch, Setting

if TYPE_CHECKING:
    import torch

    from pyro_irm.estimators.config import EstimatorConfig


def weighted_terms(
    per_row: torch.Tensor, imputed: torch.Tensor | None, batch: RiskBatch, weighting: str
) -> torch.Tensor:
    """``(B,)`` observational risk terms: ``o / p * loss``, or doubly robust around ``imputed``."""
    from pyro_irm.estimators.losses import doubly_robust_loss, observed_ips_loss

    if weighting == "dr":
        return doubly_robust_loss(per_row, imputed, batch.observed, batch.propensity)
    return observed_ips_loss(per_row, batch.observed, batch.propensity)


@dataclass(frozen=True)
class InversePropensity(Estimator):
    """IPS with the configured propensity, clipped at ``propensity_clip``."""

    family: ClassVar[Family] = "loss"
    risk_unbounded_below: ClassVar[bool] = True  # the implicit loss weighs l(0) by 1 - y / p < 0

    def needs(self, setting: Setting, config: EstimatorConfig) -> frozenset[str]:
        return frozenset({"propensity"})

    def weighting(self, config: EstimatorConfig) -> str | None:
        return self.name

    def risk(self, batch: RiskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        from pyro_irm.estimators.losses import implicit_ips_loss, label_loss

        if batch.observational:
            terms = weighted_terms(label_loss(batch.logits, batch.actions), None, batch, "ips")
        else:
            terms = implicit_ips_loss(batch.logits, batch.actions, batch.propensity)
        return terms.mean(), terms.mean()


@dataclass(frozen=True)
class SelfNormalized(InversePropensity):
    """SNIPS: the propensity rescaled by one constant so that ``mean(y / p)`` is the class prior
    (``mean(o / p)`` is 1 in an observational log): robust to a propensity off by a constant."""

    def needs(self, setting: Setting, config: EstimatorConfig) -> frozenset[str]:
        if setting == "observational":
            return frozenset({"propensity"})
        return frozenset({"propensity", "class_prior"})


@dataclass(frozen=True)
class DoublyRobust(InversePropensity):
    """The imputed loss plus the IPS-weighted correction; unbiased when either is right."""

    def needs(self, setting: Setting, config: EstimatorConfig) -> frozenset[str]:
        return frozenset({"propensity", "imputation"})

    def risk(self, batch: RiskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        from pyro_irm.estimators.losses import label_loss

        value = batch.imputation
        imputed = value * label_loss(batch.logits, 1.0) + (1 - value) * label_loss(batch.logits, 0.0)
        terms = weighted_terms(label_loss(batch.logits, batch.actions), imputed, batch, "dr")
        return terms.mean(), terms.mean()


@dataclass(frozen=True)
class RelMF(InversePropensity):
    """Rel-MF (Saito et al. 2020): the unbiased pointwise loss with a popularity propensity, the
    relative action rate to the power 0.5, unless the propensity is given."""

    def needs(self, setting: Setting, config: EstimatorConfig) -> frozenset[str]:
        if setting == "observational" or config.propensity_source == "given":
            return frozenset({"propensity"})
        return frozenset({"relative_propensity"})

    def uses_relative_propensity(self, config: EstimatorConfig) -> bool:
        return True

    def risk(self, batch: RiskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        from pyro_irm.estimators.losses import implicit_ips_loss

        terms = implicit_ips_loss(batch.logits, batch.actions, batch.propensity)
        return terms.mean(), terms.mean()
