"""Data: the feedback container, logs with text and their loaders, real preference data sets, and the
simulator with ground truth."""

from pyro_irm.data.feedback import FeedbackData, GroundTruth, split_indices
from pyro_irm.data.logs import (
    FeedbackLog,
    LoadReport,
    LogFormatError,
    LogSchema,
    read_log,
    write_records,
)
from pyro_irm.data.preference_sets import (
    PREFERENCE_SETS,
    ScoredResponses,
    load_preference_set,
    simulate_log,
)
from pyro_irm.data.samples import ultrafeedback_sample
from pyro_irm.data.simulate import SimulationConfig, simulate, simulate_from_scores

__all__ = [
    "PREFERENCE_SETS",
    "FeedbackData",
    "FeedbackLog",
    "GroundTruth",
    "LoadReport",
    "LogFormatError",
    "LogSchema",
    "ScoredResponses",
    "SimulationConfig",
    "load_preference_set",
    "read_log",
    "simulate",
    "simulate_from_scores",
    "simulate_log",
    "split_indices",
    "ultrafeedback_sample",
    "write_records",
]
