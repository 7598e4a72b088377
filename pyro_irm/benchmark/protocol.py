"""The semi-synthetic protocol of the papers (METHOD.md), made precise and repeatable.

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
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from pyro_irm.analysis.metrics import label_metrics
from pyro_irm.benchmark.datasets import EmbeddedSet
from pyro_irm.data.simulate import PropensityForm, Setting, SimulationConfig, simulate_from_scores
from pyro_irm.inference.config import TrainConfig
from pyro_irm.inference.methods import METHOD_NAMES, method_spec
from pyro_irm.inference.nuisance import EstimatorConfig, Nuisance
from pyro_irm.inference.svi import complete_nuisance, fit
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.identifiability import IdentifiabilityWarning

logger = logging.getLogger(__name__)

METRICS = ("mae", "rmse", "r2", "auc", "log_loss", "ece", "pairwise_accuracy")
LOWER_IS_BETTER = frozenset({"mae", "rmse", "log_loss", "ece"})
SWEEPABLE = ("alpha", "observation_rate", "eps0", "eps1", "feature_strength", "preference_bias")
# Defaults of the observational setting: CausalRM's 20% observation rate and noise scenario S1.
_OBSERVATIONAL_DEFAULTS = {"observation_rate": 0.2, "eps1": 0.2, "eps0": 0.1}


@dataclass(frozen=True)
class BenchmarkConfig:
    """The protocol's settings. ``None`` rates take the setting's defaults: observation rate 0.5 and
    no noise for 'implicit' (ImplicitRM); observation rate 0.2 and flip rates rho01 = eps1 = 0.2,
    rho10 = eps0 = 0.1 for 'observational' (CausalRM's S1)."""

    methods: tuple[str, ...] = field(
        default=METHOD_NAMES, metadata={"help": "methods to compare (names, space or comma separated)"}
    )
    seeds: int = field(default=5, metadata={"help": "simulation and fit seeds"})
    setting: Setting = field(
        default="implicit",
        metadata={
            "help": "'implicit' (ImplicitRM: o latent), 'observational' (CausalRM: o logged), or "
            "'chatlog' (several channels, users and a few labels; --chatlog-* options)"
        },
    )
    propensity_form: PropensityForm = field(
        default="alpha_power", metadata={"help": "the papers' 'alpha_power', or 'logistic'"}
    )
    alpha: float = field(
        default=0.5, metadata={"help": "alpha-power base; smaller is stronger preference bias"}
    )
    feature_strength: float = field(
        default=2.0,
        metadata={
            "help": "logistic form: how strongly a response feature unrelated to quality drives "
            "P(o=1) (the preference bias of ImplicitRM: some responses draw actions whatever their quality)"
        },
    )
    preference_bias: float = field(
        default=0.0, metadata={"help": "logistic form: logit P(o=1) shift for preferred responses"}
    )
    observation_rate: float | None = field(
        default=None, metadata={"help": "mean P(o=1) (default 0.5 implicit, 0.2 observational)"}
    )
    eps0: float | None = field(
        default=None, metadata={"help": "flip rate rho10 = P(y=1 | r=0, o=1) (default 0; 0.1 observational)"}
    )
    eps1: float | None = field(
        default=None, metadata={"help": "flip rate rho01 = P(y=0 | r=1, o=1) (default 0; 0.2 observational)"}
    )
    validation_fraction: float = field(
        default=0.2, metadata={"help": "share of the training pool held out for model selection"}
    )
    inference: Literal["enumerate", "amortized", "fused"] = field(
        default="fused", metadata={"help": "how implicitrm is fit ('fused' equals 'enumerate', faster)"}
    )
    max_epochs: int = field(default=40, metadata={"help": "most epochs per fit"})
    batch_size: int = field(default=512, metadata={"help": "rows per step"})
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW learning rate"})
    patience: int = field(default=5, metadata={"help": "epochs without held-out gain before stopping"})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu' or 'cuda'"})

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {self.seeds}")
        for name in self.methods:
            method_spec(name)

    def simulation(self, seed: int) -> SimulationConfig:
        defaults = _OBSERVATIONAL_DEFAULTS if self.setting == "observational" else {}

        def pick(name: str, fallback: float) -> float:
            value = getattr(self, name)
            return value if value is not None else defaults.get(name, fallback)

        return SimulationConfig(
            propensity_form=self.propensity_form,
            alpha=self.alpha,
            feature_strength=self.feature_strength,
            preference_bias=self.preference_bias,
            observation_rate=pick("observation_rate", 0.5),
            eps0=pick("eps0", 0.0),
            eps1=pick("eps1", 0.0),
            setting=self.setting,
            seed=seed,
        )

    def applicable_methods(self) -> tuple[str, ...]:
        return tuple(m for m in self.methods if self.setting in method_spec(m).settings)


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
) -> BenchmarkResult:
    """Run every applicable method of ``config`` on ``data`` for ``config.seeds`` seeds."""
    config = config or BenchmarkConfig()
    model_config = model_config or ModelConfig()
    estimator_config = estimator_config or EstimatorConfig()
    methods = config.applicable_methods()
    skipped = {
        m: f"needs an observational log ({config.setting} setting)"
        for m in config.methods
        if m not in methods
    }
    test_labels = data.preference(data.test)
    test_embeddings = torch.from_numpy(np.ascontiguousarray(data.test.embeddings))
    per_seed: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    sources: dict[str, str] = {}
    notes: list[str] = []
    positive_action_rate: list[float] = []
    bar = tqdm(
        total=config.seeds * len(methods), desc=f"benchmark {data.name}", disable=None if progress else True
    )
    for seed in range(config.seeds):
        train = simulate_from_scores(
            data.train.embeddings,
            data.train.scores,
            data.threshold,
            config.simulation(seed),
            data.score_range,
            prompt_ids=data.train.prompt_ids,
        )
        preferred = train.truth.preference == 1
        positive_action_rate.append(float(train.truth.propensity_probability[preferred].mean()))
        # Nuisance models are shared by every method of this seed: one estimate, many estimators.
        nuisance = Nuisance()
        started = time.perf_counter()
        for method in methods:
            nuisance = complete_nuisance(train, method, estimator_config, nuisance, seed)
        nuisance_seconds = time.perf_counter() - started
        sources.update(nuisance.sources)
        for method in methods:
            train_config = TrainConfig(
                method=method,
                inference=config.inference,
                batch_size=config.batch_size,
                max_epochs=config.max_epochs,
                learning_rate=config.learning_rate,
                validation_fraction=config.validation_fraction,
                patience=config.patience,
                seed=seed,
                device=config.device,
                progress=False,
            )
            started = time.perf_counter()
            # The papers' setting has nothing that separates reward from propensity; the result
            # records that once instead of warning on every fit.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", IdentifiabilityWarning)
                result = fit(train, train_config, model_config, estimator_config, nuisance)
            for warning in caught:
                if not issubclass(warning.category, IdentifiabilityWarning):
                    warnings.warn_explicit(
                        warning.message, warning.category, warning.filename, warning.lineno
                    )
                elif f"{method}: {warning.message}" not in notes:
                    notes.append(f"{method}: {warning.message}")
            elapsed = time.perf_counter() - started
            probability = result.reward_model.preference_probability(test_embeddings)
            metrics = label_metrics(test_labels, probability, data.test.prompt_ids, data.test.scores)
            metrics["fit_seconds"] = elapsed
            metrics["epochs"] = result.history.epochs
            per_seed[method].append(metrics)
            seconds[method].append(elapsed)
            bar.update(1)
            logger.info(
                "seed %d %s: auc %.4f mae %.4f (%.1fs)", seed, method, metrics["auc"], metrics["mae"], elapsed
            )
        logger.info("seed %d nuisance estimates: %.1fs", seed, nuisance_seconds)
    bar.close()
    return BenchmarkResult(
        data.name, data.description, config, per_seed, seconds, skipped, sources, notes, positive_action_rate
    )


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
            data, replace(config, **{parameter: value}), model_config, estimator_config, progress
        )
        for value in values
    }
