"""pyro_irm: unbiased reward models from implicit user feedback, with Pyro.

The path: log rows -> embeddings -> four-group model + guide -> :func:`fit` -> :class:`RewardModel`.
Every baseline (``METHOD_NAMES``) fits through the same :func:`fit`; :func:`run_benchmark` compares
them on one data set.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Public name -> the module that defines it. Importing pyro_irm imports none of them (torch, Pyro,
# ArviZ, scikit-learn and matplotlib load when a name that needs them is first used).
_EXPORTS = {
    "diagnose_inference_data": "pyro_irm.analysis",
    "run_unbiasedness_study": "pyro_irm.analysis",
    "to_inference_data": "pyro_irm.analysis",
    "head_inference_data": "pyro_irm.analysis",
    "fit_bayesian_head": "pyro_irm.inference",
    "FinetuneConfig": "pyro_irm.inference.config",
    "finetune": "pyro_irm.inference.finetune",
    "HeadConfig": "pyro_irm.inference",
    "evaluate": "pyro_irm.analysis.metrics",
    "label_metrics": "pyro_irm.analysis.metrics",
    "BenchmarkConfig": "pyro_irm.benchmark",
    "BenchmarkResult": "pyro_irm.benchmark",
    "load_embedded_set": "pyro_irm.benchmark",
    "run_benchmark": "pyro_irm.benchmark",
    "run_sweep": "pyro_irm.benchmark",
    "BestOfN": "pyro_irm.rerank",
    "best_of_n": "pyro_irm.rerank",
    "FeedbackData": "pyro_irm.data",
    "FeedbackLog": "pyro_irm.data",
    "GroundTruth": "pyro_irm.data",
    "LogFormatError": "pyro_irm.data",
    "LogSchema": "pyro_irm.data",
    "SimulationConfig": "pyro_irm.data",
    "load_preference_set": "pyro_irm.data",
    "read_log": "pyro_irm.data",
    "simulate": "pyro_irm.data.simulation",
    "simulate_from_scores": "pyro_irm.data",
    "simulate_log": "pyro_irm.data",
    "write_records": "pyro_irm.data",
    "PreferencePairs": "pyro_irm.data.pairs",
    "read_pairs": "pyro_irm.data.pairs",
    "EmbeddingCache": "pyro_irm.encoders",
    "EncoderConfig": "pyro_irm.encoders",
    "TextEncoder": "pyro_irm.encoders",
    "embed_rows": "pyro_irm.encoders",
    "export_hf": "pyro_irm.export",
    "GROUP_NAMES": "pyro_irm.groups",
    "METHOD_NAMES": "pyro_irm.estimators",
    "EstimatorConfig": "pyro_irm.estimators.config",
    "FitHistory": "pyro_irm.inference",
    "FitResult": "pyro_irm.inference",
    "Nuisance": "pyro_irm.estimators.nuisance",
    "TrainConfig": "pyro_irm.inference",
    "estimate_nuisance": "pyro_irm.estimators.nuisance",
    "fit": "pyro_irm.inference",
    "fit_selected": "pyro_irm.inference",
    "ModelConfig": "pyro_irm.models",
    "RewardModel": "pyro_irm.models",
    "IdentifiabilityWarning": "pyro_irm.models.identifiability",
    "Run": "pyro_irm.runs",
    "embed_log": "pyro_irm.runs",
    "evaluate_pairs": "pyro_irm.evaluation",
    "evaluate_run": "pyro_irm.evaluation",
    "fit_log": "pyro_irm.runs",
    "save_run": "pyro_irm.runs",
    "trust_modules": "pyro_irm.models.components",
}

__all__ = [
    "BenchmarkConfig",
    "BenchmarkResult",
    "BestOfN",
    "EmbeddingCache",
    "EncoderConfig",
    "EstimatorConfig",
    "FeedbackData",
    "FeedbackLog",
    "FinetuneConfig",
    "FitHistory",
    "FitResult",
    "GROUP_NAMES",
    "HeadConfig",
    "GroundTruth",
    "IdentifiabilityWarning",
    "LogFormatError",
    "LogSchema",
    "METHOD_NAMES",
    "ModelConfig",
    "Nuisance",
    "PreferencePairs",
    "RewardModel",
    "Run",
    "SimulationConfig",
    "TextEncoder",
    "TrainConfig",
    "best_of_n",
    "diagnose_inference_data",
    "embed_log",
    "embed_rows",
    "estimate_nuisance",
    "evaluate",
    "evaluate_pairs",
    "evaluate_run",
    "export_hf",
    "head_inference_data",
    "fit",
    "fit_bayesian_head",
    "fit_log",
    "finetune",
    "fit_selected",
    "label_metrics",
    "load_embedded_set",
    "load_preference_set",
    "read_log",
    "read_pairs",
    "run_benchmark",
    "run_sweep",
    "run_unbiasedness_study",
    "save_run",
    "simulate",
    "simulate_from_scores",
    "simulate_log",
    "to_inference_data",
    "trust_modules",
    "write_records",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # static tools see every name as a plain import
    from pyro_irm.analysis import (
        diagnose_inference_data,
        head_inference_data,
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
    from pyro_irm.estimators import METHOD_NAMES
    from pyro_irm.evaluation import evaluate_pairs, evaluate_run
    from pyro_irm.export import export_hf
    from pyro_irm.groups import GROUP_NAMES
    from pyro_irm.inference import (
        EstimatorConfig,
        FitHistory,
        FitResult,
        HeadConfig,
        Nuisance,
        TrainConfig,
        estimate_nuisance,
        fit,
        fit_bayesian_head,
        fit_selected,
    )
    from pyro_irm.inference.config import FinetuneConfig
    from pyro_irm.inference.finetune import finetune
    from pyro_irm.models import ModelConfig, RewardModel
    from pyro_irm.models.identifiability import IdentifiabilityWarning
    from pyro_irm.rerank import BestOfN, best_of_n
    from pyro_irm.runs import Run, embed_log, fit_log, save_run
