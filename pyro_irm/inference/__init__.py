"""Fitting: SVI by exact enumeration, with an amortized guide, or in closed form."""

from pyro_irm.inference.config import TrainConfig
from pyro_irm.inference.objectives import FusedObjective, SVIObjective, heldout_elbo
from pyro_irm.inference.result import FitHistory, FitResult
from pyro_irm.inference.svi import fit, resolve_device

__all__ = [
    "FitHistory",
    "FitResult",
    "FusedObjective",
    "SVIObjective",
    "TrainConfig",
    "fit",
    "heldout_elbo",
    "resolve_device",
]
