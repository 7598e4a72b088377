"""pyro_irm: unbiased reward models from implicit user feedback, with Pyro.

The path: log rows -> embeddings -> four-group model + guide -> :func:`fit` -> :class:`RewardModel`.
"""

from pyro_irm.analysis.metrics import evaluate, label_metrics
from pyro_irm.data import (
    FeedbackData,
    FeedbackLog,
    GroundTruth,
    LogFormatError,
    LogSchema,
    SimulationConfig,
    load_preference_set,
    read_log,
    simulate,
    simulate_from_scores,
    simulate_log,
    write_records,
)
from pyro_irm.encoders import EmbeddingCache, EncoderConfig, TextEncoder, embed_rows
from pyro_irm.groups import GROUP_NAMES
from pyro_irm.inference import FitHistory, FitResult, TrainConfig, fit
from pyro_irm.models import ModelConfig, RewardModel
from pyro_irm.models.identifiability import IdentifiabilityWarning
from pyro_irm.runs import Run, embed_log, evaluate_run, fit_log, save_run

__all__ = [
    "GROUP_NAMES",
    "EmbeddingCache",
    "EncoderConfig",
    "FeedbackData",
    "FeedbackLog",
    "FitHistory",
    "FitResult",
    "GroundTruth",
    "IdentifiabilityWarning",
    "LogFormatError",
    "LogSchema",
    "ModelConfig",
    "RewardModel",
    "Run",
    "SimulationConfig",
    "TextEncoder",
    "TrainConfig",
    "embed_log",
    "embed_rows",
    "evaluate",
    "evaluate_run",
    "fit",
    "fit_log",
    "label_metrics",
    "load_preference_set",
    "read_log",
    "save_run",
    "simulate",
    "simulate_from_scores",
    "simulate_log",
    "write_records",
]
