"""The semi-synthetic protocol of the papers (docs/method.md), made precise and repeatable.

For each seed: simulate feedback on the training pool (by default the papers' setting: alpha-power
propensity on the graded score, alpha 0.5, observation rate 0.5), hold out 20% of it for
validation, fit every method on (embedding, feedback) only, and score the test split against its
clean labels. Early stopping and model selection see only the feedback: the held-out ELBO for the
Pyro family, the method's own held-out risk for the loss family. The clean labels enter the test
metrics and nothing else (and the oracle, which is trained on the true preferences by definition).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from pyro_irm.analysis.metrics import label_metrics
from pyro_irm.benchmark.config import LOWER_IS_BETTER, METRICS, SWEEPABLE, BenchmarkConfig, UserModel
from pyro_irm.benchmark.datasets import EmbeddedSet
from pyro_irm.data.simulation import simulate_from_scores
from pyro_irm.estimators import get_estimator
from pyro_irm.estimators.nuisance import EstimatorConfig, Nuisance
from pyro_irm.inference.svi import FitDivergedError, complete_nuisance, fit
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.identifiability import IdentifiabilityWarning

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkResult:
    """Per-seed test metrics of each method and their mean and standard deviation over seeds.

    ``summary`` is ``{method: {metric: {"mean": .., "std": ..}}}`` (std with one degree of freedom;
    0 for one seed). ``skipped`` names methods that do not apply to the setting, and why.
    """

    dataset: str
    description: str
    config: BenchmarkConfig
    per_seed: dict[str, list[dict[str, float]]]
    seconds: dict[str, list[float]]
    skipped: dict[str, str] = field(default_factory=dict)
    nuisance_sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    positive_action_rate: list[float] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        return {
            method: {metric: _mean_std([run[metric] for run in runs]) for metric in (*METRICS, "fit_seconds")}
            for method, runs in self.per_seed.items()
        }

    def gap_closed(self, method: str = "implicitrm", metric: str = "auc") -> float | None:
        """Share of the naive-to-oracle gap in ``metric`` that ``method`` closes, on seed means;
        None when there is no gap (naive at or beyond the oracle) or a method is missing."""
        summary = self.summary
        if not {method, "naive", "oracle"} <= summary.keys():
            return None
        naive, oracle = summary["naive"][metric]["mean"], summary["oracle"][metric]["mean"]
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        if not math.isfinite(oracle - naive) or sign * (oracle - naive) <= 0:
            return None
        return (summary[method][metric]["mean"] - naive) / (oracle - naive)

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "description": self.description,
            "config": asdict(self.config),
            "summary": self.summary,
            "per_seed": self.per_seed,
            "skipped": self.skipped,
            "nuisance_sources": self.nuisance_sources,
            "warnings": self.warnings,
            "positive_action_rate": self.positive_action_rate,
            "implicitrm_auc_gap_closed": self.gap_closed("implicitrm", "auc"),
            "implicitrm_mae_gap_closed": self.gap_closed("implicitrm", "mae"),
            "model_selection": "held-out ELBO (Pyro family) or the method's own held-out risk "
            "(loss family) on 20% of the simulated feedback; clean labels only in the test metrics",
        }


def _mean_std(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    if not len(finite):
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": float(finite.mean()), "std": float(finite.std(ddof=1)) if len(finite) > 1 else 0.0}


def run_benchmark(
    data: EmbeddedSet,
    config: BenchmarkConfig | None = None,
    model_config: ModelConfig | None = None,
    estimator_config: EstimatorConfig | None = None,
    progress: bool = False,
    user_models: Sequence[UserModel] = (),
) -> BenchmarkResult:
    """Run every applicable method of ``config`` on ``data`` for ``config.seeds`` seeds, and each
    of ``user_models`` (models of the user's, fit by their method's inference on the same rows)."""
    config = config or BenchmarkConfig()
    model_config = model_config or ModelConfig()
    estimator_config = estimator_config or EstimatorConfig()
    methods = config.applicable_methods()
    builders = _user_builders(user_models, config)
    fits = [*((m, m) for m in methods), *((u.name, u.method) for u in user_models)]
    needs = f"needs an observational log ({config.setting} setting)"
    skipped = {method: needs for method in config.methods if method not in methods}
    test_labels = data.preference(data.test)
    test_embeddings = torch.from_numpy(np.ascontiguousarray(data.test.embeddings))
    per_seed: dict[str, list[dict[str, float]]] = {name: [] for name, _ in fits}
    seconds: dict[str, list[float]] = {name: [] for name, _ in fits}
    sources: dict[str, str] = {}
    notes: list[str] = []
    diverged: dict[str, list[str]] = {}
    positive_action_rate: list[float] = []
    bar = tqdm(
        total=config.seeds * len(fits), desc=f"benchmark {data.name}", disable=None if progress else True
    )
    for seed in range(config.seeds):
        train = simulate_from_scores(
            data.train.embeddings,
            data.train.scores,
            data.threshold,
            config.simulation_for(seed),
            data.score_range,
            prompt_ids=data.train.prompt_ids,
        )
        preferred = train.truth.preference == 1
        positive_action_rate.append(float(train.truth.propensity_probability[preferred].mean()))
        # Nuisance models are shared by every method of this seed: one estimate, many estimators.
        nuisance = Nuisance()
        started = time.perf_counter()
        for method in dict.fromkeys(method for _, method in fits):
            nuisance = complete_nuisance(train, method, estimator_config, nuisance, seed)
        nuisance_seconds = time.perf_counter() - started
        sources.update(nuisance.sources)
        for name, method in fits:
            train_config = config.training_for(method, seed)
            user_model = None
            if name in builders:
                train_config = replace(train_config, restarts=1)
                user_model = builders[name](train)
            started = time.perf_counter()
            try:
                result = _fit_noting(name, notes, train, train_config, model_config, estimator_config,
                                     nuisance, user_model)  # fmt: skip
            except FitDivergedError as error:
                result = None
                diverged.setdefault(name, []).append(f"seed {seed}: {error}")
            elapsed = time.perf_counter() - started
            metrics = _test_metrics(result, data, test_labels, test_embeddings)
            metrics["fit_seconds"] = elapsed
            per_seed[name].append(metrics)
            seconds[name].append(elapsed)
            bar.update(1)
            logger.info(
                "seed %d %s: auc %.4f mae %.4f (%.1fs)", seed, name, metrics["auc"], metrics["mae"], elapsed
            )
        logger.info("seed %d nuisance estimates: %.1fs", seed, nuisance_seconds)
    bar.close()
    notes += [
        f"{method}: the fit diverged in {len(failed)} of {config.seeds} seeds, scored n/a ({failed[0]})"
        for method, failed in diverged.items()
    ]
    return BenchmarkResult(
        data.name, data.description, config, per_seed, seconds, skipped, sources, notes, positive_action_rate
    )


def _test_metrics(result, data: EmbeddedSet, test_labels, test_embeddings) -> dict[str, float]:
    """A fit's metrics on the test split; NaN for a fit that diverged (the seed still counts)."""
    if result is None:
        return {**{metric: float("nan") for metric in METRICS}, "epochs": float("nan")}
    probability = result.reward_model.preference_probability(test_embeddings)
    metrics = label_metrics(test_labels, probability, data.test.prompt_ids, data.test.scores)
    metrics["epochs"] = result.history.epochs
    return metrics


def _fit_noting(name: str, notes: list[str], *arguments):
    """:func:`fit` on ``arguments``. The papers' setting has nothing that separates reward from
    propensity: its identifiability warning goes into ``notes`` once instead of on every fit."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IdentifiabilityWarning)
        try:
            return fit(*arguments)
        finally:
            for warning in caught:
                if not issubclass(warning.category, IdentifiabilityWarning):
                    warnings.warn_explicit(
                        warning.message, warning.category, warning.filename, warning.lineno
                    )
                elif f"{name}: {warning.message}" not in notes:
                    notes.append(f"{name}: {warning.message}")


def _user_builders(user_models: Sequence[UserModel], config: BenchmarkConfig) -> dict:
    """``{name: build}`` of the user's models, their names and methods checked."""
    builders = {}
    for user_model in user_models:
        if user_model.name in config.methods or user_model.name in builders:
            raise ValueError(f"user_models: the name {user_model.name!r} is taken; give each model its own")
        if config.setting not in get_estimator(user_model.method).settings:
            raise ValueError(
                f"user_models: {user_model.name!r} is fit by {user_model.method!r}, which does not "
                f"apply to the {config.setting} setting"
            )
        builders[user_model.name] = user_model.build
    return builders


def run_sweep(
    data: EmbeddedSet,
    parameter: str,
    values: list[float],
    config: BenchmarkConfig | None = None,
    model_config: ModelConfig | None = None,
    estimator_config: EstimatorConfig | None = None,
    progress: bool = False,
) -> dict[float, BenchmarkResult]:
    """The benchmark at each value of one simulation ``parameter`` (one of :data:`SWEEPABLE`)."""
    if parameter not in SWEEPABLE:
        raise ValueError(f"cannot sweep {parameter!r}; choose one of {', '.join(SWEEPABLE)}")
    config = config or BenchmarkConfig()
    return {
        value: run_benchmark(
            data,
            replace(config, simulation=replace(config.simulation, **{parameter: value})),
            model_config,
            estimator_config,
            progress,
        )
        for value in values
    }
