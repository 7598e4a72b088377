"""Fitting: SVI by exact enumeration, with an amortized guide, or in closed form; and every
baseline estimator through the same loop."""

from pyro_irm.inference.bayesian_head import (
    HeadConfig,
    HeadPosterior,
    compare_posteriors,
    fit_bayesian_head,
    fit_head_laplace,
    fit_head_nuts,
    fit_head_svi,
)
from pyro_irm.inference.config import TrainConfig
from pyro_irm.inference.estimators import LossObjective, PromptPartners
from pyro_irm.inference.methods import METHOD_NAMES, METHODS, MethodSpec, method_spec
from pyro_irm.inference.nuisance import EstimatorConfig, Nuisance, estimate_nuisance
from pyro_irm.inference.objectives import FusedObjective, SVIObjective, heldout_elbo
from pyro_irm.inference.result import FitHistory, FitResult
from pyro_irm.inference.svi import complete_nuisance, fit, fit_selected, resolve_device

__all__ = [
    "HeadConfig",
    "HeadPosterior",
    "compare_posteriors",
    "fit_bayesian_head",
    "fit_head_laplace",
    "fit_head_nuts",
    "fit_head_svi",
    "METHODS",
    "METHOD_NAMES",
    "EstimatorConfig",
    "FitHistory",
    "FitResult",
    "FusedObjective",
    "LossObjective",
    "MethodSpec",
    "Nuisance",
    "PromptPartners",
    "SVIObjective",
    "TrainConfig",
    "complete_nuisance",
    "estimate_nuisance",
    "fit",
    "fit_selected",
    "heldout_elbo",
    "method_spec",
    "resolve_device",
]
