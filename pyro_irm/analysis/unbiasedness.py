"""Is an objective unbiased? Over many simulated replicates, each objective's estimate of a fixed
reward model's risk minus the risk under the true preferences (docs/method.md, "Why it is
unbiased").

The risk is the mean binary cross-entropy of the reward model's P(preferred) against the true
preference r. Per replicate, every objective sees what it would see in practice, with its nuisance
quantities at their true values (so the study isolates the objective's bias from estimation error),
except ``implicitrm_fitted``, whose stratification comes from an ImplicitRM fit on separate data:

* ``naive``: BCE against the action y;
* ``upu``: the unbiased PU risk with the true class prior (unbiased only if acting positives were a
  uniform sample of the positives, which propensity bias breaks);
* ``ips``: ``(y/p) l(1) + (1 - y/p) l(0)`` with the true propensity;
* ``causalrm``: on an observational replicate (o logged, feedback flipped with rates eps1 and
  eps0), ``o/p * l~(y)`` with the true propensity and flip rates;
* ``implicitrm_true``: the posterior-weighted loss ``sum_r q(r | e, y) l(r)`` with the true
  posterior ``q`` (from the true P(r=1 | e) and P(o=1 | e));
* ``implicitrm_fitted``: the same with ``q`` from a fitted ImplicitRM model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from pyro_irm.analysis.plots import finish_figure, new_figure
from pyro_irm.data.simulation import SimulationConfig, simulate
from pyro_irm.estimators.losses import (
    implicit_ips_loss,
    label_loss,
    noise_corrected_loss,
    observed_ips_loss,
    pu_risks,
)
from pyro_irm.inference.config import TrainConfig
from pyro_irm.inference.svi import fit
from pyro_irm.models.reward_model import RewardModel
from pyro_irm.tables import markdown_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OBJECTIVES = ("naive", "upu", "ips", "causalrm", "implicitrm_true", "implicitrm_fitted")


@dataclass(frozen=True)
class UnbiasednessConfig:
    """Replicates, their size, and the simulated worlds (implicit, and observational for CausalRM)."""

    replicates: int = 200
    rows: int = 2000
    seed: int = 0
    confidence: float = 0.95
    simulation: SimulationConfig = field(default_factory=lambda: SimulationConfig(embedding_dim=16))
    observational: SimulationConfig = field(
        # Milder propensity spread than the implicit world: o / p weights of rows with p near 0
        # make the estimate heavy-tailed (unbiased, but a confidence interval needs many replicates).
        default_factory=lambda: SimulationConfig(
            embedding_dim=16,
            setting="observational",
            observation_rate=0.5,
            feature_strength=1.0,
            context_strength=1.0,
            eps0=0.1,
            eps1=0.2,
        )
    )
    stratification_rows: int = 8000

    def __post_init__(self) -> None:
        if self.replicates < 2:
            raise ValueError(f"replicates must be at least 2, got {self.replicates}")
        if self.rows < 10:
            raise ValueError(f"rows must be at least 10, got {self.rows}")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0.5, 1), got {self.confidence}")


@dataclass
class UnbiasednessResult:
    """``differences[objective]`` is ``(replicates,)``: estimated risk minus true risk."""

    differences: dict[str, np.ndarray]
    true_risk: np.ndarray
    confidence: float

    def summary(self) -> dict[str, dict[str, float]]:
        """Per objective: mean bias, its standard error and confidence interval, and whether the
        interval covers zero."""
        z = _normal_quantile(0.5 + self.confidence / 2)
        table = {}
        for name, values in self.differences.items():
            mean = float(values.mean())
            se = float(values.std(ddof=1) / math.sqrt(len(values)))
            table[name] = {
                "mean_bias": mean,
                "standard_error": se,
                "ci_low": mean - z * se,
                "ci_high": mean + z * se,
                "covers_zero": bool(mean - z * se <= 0.0 <= mean + z * se),
                "relative_bias": mean / float(self.true_risk.mean()),
            }
        return table

    def format_table(self) -> str:
        header = ("objective", "mean bias", "std. error", f"{self.confidence:.0%} interval", "covers 0")
        rows = (
            (
                name,
                f"{row['mean_bias']:+.4f}",
                f"{row['standard_error']:.4f}",
                f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]",
                "yes" if row["covers_zero"] else "no",
            )
            for name, row in self.summary().items()
        )
        return markdown_table(header, rows, align="lrrlc")


def _normal_quantile(q: float) -> float:
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(q, dtype=torch.float64)))


def default_scorer(embedding_dim: int, seed: int = 12345):
    """A fixed reward model: ``f(e) = 2 * w . e`` for one seeded unit vector ``w``."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(embedding_dim, generator=generator, dtype=torch.float64)
    direction = (direction / direction.norm()).float()
    return lambda embeddings: 2.0 * embeddings @ direction


def _posterior_weighted_risk(logits: torch.Tensor, preference_posterior: torch.Tensor) -> torch.Tensor:
    return (
        preference_posterior * label_loss(logits, 1.0) + (1 - preference_posterior) * label_loss(logits, 0.0)
    ).mean()


def run_unbiasedness_study(
    config: UnbiasednessConfig | None = None,
    scorer=None,
    objectives: tuple[str, ...] = OBJECTIVES,
    progress: bool = False,
) -> UnbiasednessResult:
    """Every objective's risk estimate minus the true risk, over ``config.replicates`` replicates.

    Args:
        scorer: the fixed reward model: a :class:`RewardModel` or a function ``(N, D) -> (N,)``
            logits; default :func:`default_scorer`.
    """
    config = config or UnbiasednessConfig()
    unknown = set(objectives) - set(OBJECTIVES)
    if unknown:
        raise ValueError(f"unknown objectives {sorted(unknown)}; choose from {', '.join(OBJECTIVES)}")
    dim = config.simulation.embedding_dim
    if scorer is None:
        scorer = default_scorer(dim)
    elif isinstance(scorer, RewardModel):
        scorer = scorer.score
    stratifier = None
    if "implicitrm_fitted" in objectives:
        sample = simulate(
            replace(config.simulation, num_rows=config.stratification_rows, seed=config.seed + 10**6)
        )
        stratifier = fit(
            sample, TrainConfig(method="implicitrm", inference="fused", progress=False)
        ).reward_model
    differences: dict[str, list[float]] = {name: [] for name in objectives}
    true_risks = []
    for replicate in tqdm(range(config.replicates), desc="replicates", disable=None if progress else True):
        seed = config.seed + replicate
        data = simulate(replace(config.simulation, num_rows=config.rows, seed=seed))
        truth = data.truth
        with torch.no_grad():
            logits = scorer(data.embeddings).float()
        true_risk = label_loss(logits, truth.preference).mean()
        true_risks.append(true_risk.item())
        actions = data.actions
        estimates: dict[str, torch.Tensor] = {}
        if "naive" in objectives:
            estimates["naive"] = label_loss(logits, actions).mean()
        if "upu" in objectives:
            prior = truth.preference_probability.mean().item()
            estimates["upu"] = sum(pu_risks(logits, actions, prior))
        if "ips" in objectives:
            estimates["ips"] = implicit_ips_loss(logits, actions, truth.propensity_probability).mean()
        if "implicitrm_true" in objectives:
            silent = silent_preference_posterior(truth.preference_probability, truth.propensity_probability)
            estimates["implicitrm_true"] = _posterior_weighted_risk(
                logits, torch.where(actions == 1, 1.0, silent)
            )
        if stratifier is not None:
            groups = stratifier.posterior_groups(data.embeddings, actions, data.context)
            estimates["implicitrm_fitted"] = _posterior_weighted_risk(logits, groups[:, :2].sum(-1))
        for name, value in estimates.items():
            differences[name].append(value.item() - true_risk.item())
        if "causalrm" in objectives:
            observed = simulate(replace(config.observational, num_rows=config.rows, seed=seed))
            with torch.no_grad():
                observed_logits = scorer(observed.embeddings).float()
            observed_truth = observed.truth
            corrected = noise_corrected_loss(
                observed_logits, observed.actions, config.observational.eps1, config.observational.eps0
            )
            estimate = observed_ips_loss(
                corrected, observed.observed, observed_truth.propensity_probability
            ).mean()
            observed_risk = label_loss(observed_logits, observed_truth.preference).mean()
            differences["causalrm"].append(estimate.item() - observed_risk.item())
    return UnbiasednessResult(
        {name: np.asarray(values) for name, values in differences.items()},
        np.asarray(true_risks),
        config.confidence,
    )


def silent_preference_posterior(prior: torch.Tensor, propensity: torch.Tensor) -> torch.Tensor:
    """``P(r = 1 | y = 0, row)`` of the seed paper's model, ``(N,)``, from ``P(r = 1)`` and
    ``P(o = 1)``: ``s_f (1 - s_g) / (1 - s_f s_g)``. The same number as
    :meth:`ImplicitFeedbackModel.posterior_groups` (tested in float64), written with probabilities
    because the study's truth is given as probabilities."""
    return prior * (1 - propensity) / (1 - prior * propensity).clamp_min(1e-12)


def plot_unbiasedness(result: UnbiasednessResult, path: str | Path | None = None) -> Figure:
    """Each objective's mean bias with its confidence interval, and a line at zero."""

    summary = result.summary()
    names = list(summary)
    figure, axis = new_figure(figsize=(6.4, 3.6), dpi=120)
    for position, name in enumerate(names):
        row = summary[name]
        color = "tab:green" if row["covers_zero"] else "tab:red"
        axis.errorbar(
            row["mean_bias"],
            position,
            xerr=[[row["mean_bias"] - row["ci_low"]], [row["ci_high"] - row["mean_bias"]]],
            fmt="o",
            color=color,
            capsize=4,
        )
    axis.axvline(0.0, color="grey", linestyle=":")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("estimated risk - true risk (BCE, nats)")
    replicates = len(next(iter(result.differences.values())))
    axis.set_title(f"bias over {replicates} replicates ({result.confidence:.0%} intervals)")
    return finish_figure(figure, path)
