"""Fitting: SVI by exact enumeration, with an amortized guide, or in closed form; and every
baseline estimator through the same loop."""

from pyro_irm._lazy import exported_names, lazy_exports

_EXPORTS = {
    "pyro_irm.inference.bayesian_head": (
        "HeadPosterior",
        "NetworkPosterior",
        "compare_posteriors",
        "fit_bayesian_head",
        "fit_head_laplace",
        "fit_head_network",
        "fit_head_nuts",
        "fit_head_svi",
    ),
    "pyro_irm.inference.config": ("HeadConfig", "TrainConfig"),
    "pyro_irm.estimators.config": ("EstimatorConfig",),
    "pyro_irm.estimators.nuisance": (
        "Nuisance",
        "estimate_nuisance",
    ),
    "pyro_irm.inference.objectives": (
        "FusedObjective",
        "SVIObjective",
        "heldout_elbo",
    ),
    "pyro_irm.inference.result": (
        "FitHistory",
        "FitResult",
    ),
    "pyro_irm.inference.svi": (
        "complete_nuisance",
        "fit",
        "fit_selected",
        "resolve_device",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = exported_names(_EXPORTS)
