"""pyro_irm: unbiased reward models from implicit user feedback, with Pyro.

The path: log rows -> embeddings -> four-group model + guide -> :func:`fit` -> :class:`RewardModel`.
Every baseline (``METHOD_NAMES``) fits through the same :func:`fit`; :func:`run_benchmark` compares
them on one data set.
"""

from pyro_irm.analysis import (
    diagnose_inference_data,
    run_unbiasedness_study,
    to_inference_data,
)
from pyro_irm.analysis.metrics import evaluate, label_metrics
from pyro_irm.benchmark import (
    BenchmarkConfig,
    BenchmarkResult,
    load_embedded_set,
    run_benchmark,
    run_sweep,
)
from pyro_irm.best_of_n import BestOfN, best_of_n
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
from pyro_irm.data.pairs import PreferencePairs, read_pairs
from pyro_irm.encoders import EmbeddingCache, EncoderConfig, TextEncoder, embed_rows
from pyro_irm.export import export_hf
from pyro_irm.groups import GROUP_NAMES
from pyro_irm.inference import (
    METHOD_NAMES,
    EstimatorConfig,
    FitHistory,
    FitResult,
    Nuisance,
    TrainConfig,
    estimate_nuisance,
    fit,
    fit_selected,
)
from pyro_irm.models import ModelConfig, RewardModel
from pyro_irm.models.identifiability import IdentifiabilityWarning
from pyro_irm.runs import Run, embed_log, evaluate_pairs, evaluate_run, fit_log, save_run

__all__ = [
    "GROUP_NAMES",
    "METHOD_NAMES",
    "BenchmarkConfig",
    "BestOfN",
    "PreferencePairs",
    "best_of_n",
    "evaluate_pairs",
    "export_hf",
    "read_pairs",
    "BenchmarkResult",
    "EstimatorConfig",
    "Nuisance",
    "estimate_nuisance",
    "load_embedded_set",
    "run_benchmark",
    "run_sweep",
    "diagnose_inference_data",
    "run_unbiasedness_study",
    "to_inference_data",
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
    "fit_selected",
    "label_metrics",
    "load_preference_set",
    "read_log",
    "save_run",
    "simulate",
    "simulate_from_scores",
    "simulate_log",
    "write_records",
]
