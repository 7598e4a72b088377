"""pyro_irm: unbiased reward models from implicit user feedback, with Pyro.

The path: rows -> embeddings -> four-group model + guide -> :func:`fit` -> :class:`RewardModel`.
"""

from pyro_irm.analysis.metrics import evaluate
from pyro_irm.data import (
    FeedbackData,
    GroundTruth,
    SimulationConfig,
    simulate,
    simulate_from_scores,
)
from pyro_irm.groups import GROUP_NAMES
from pyro_irm.inference import FitHistory, FitResult, TrainConfig, fit
from pyro_irm.models import ModelConfig, RewardModel
from pyro_irm.models.identifiability import IdentifiabilityWarning

__all__ = [
    "GROUP_NAMES",
    "FeedbackData",
    "FitHistory",
    "FitResult",
    "GroundTruth",
    "IdentifiabilityWarning",
    "ModelConfig",
    "RewardModel",
    "SimulationConfig",
    "TrainConfig",
    "evaluate",
    "fit",
    "simulate",
    "simulate_from_scores",
]
