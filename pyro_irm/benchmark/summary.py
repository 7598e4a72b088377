"""Benchmark results as a Markdown table, a bar chart and a sweep plot (matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from pyro_irm.analysis.plots import finish_figure, new_figure
from pyro_irm.benchmark.config import LOWER_IS_BETTER, METRICS
from pyro_irm.benchmark.protocol import BenchmarkResult
from pyro_irm.tables import markdown_table, mean_std

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_LABELS = {
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R^2",
    "auc": "AUC",
    "log_loss": "log-loss",
    "ece": "ECE",
    "pairwise_accuracy": "pairwise acc.",
    "fit_seconds": "fit s",
}


def format_table(result: BenchmarkResult) -> str:
    """Markdown table, one row per method, ``mean ± std`` over seeds; the best mean of each metric
    is in bold. Notes below say how models were selected and what was skipped."""
    summary = result.summary
    columns = (*METRICS, "fit_seconds")
    best = {}
    for metric in METRICS:
        means = [summary[m][metric]["mean"] for m in summary if m != "oracle"]
        means = [v for v in means if math.isfinite(v)]
        if means:
            best[metric] = min(means) if metric in LOWER_IS_BETTER else max(means)
    rows = []
    for method, metrics in summary.items():
        cells = []
        for column in columns:
            text = mean_std(metrics[column], 1 if column == "fit_seconds" else 3)
            if column in best and metrics[column]["mean"] == best[column] and not _is_ceiling(method):
                text = f"**{text}**"
            cells.append(text)
        rows.append((method, *cells))
    lines = [markdown_table(("method", *(_LABELS[c] for c in columns)), rows).rstrip("\n")]
    config = result.config
    simulation = config.simulation
    notes = [
        "",
        f"{result.description}. {config.seeds} seeds; mean ± standard deviation over seeds.",
        f"Setting: {config.setting}, propensity {simulation.propensity_form} "
        + (
            f"(alpha {simulation.alpha}), "
            if simulation.propensity_form == "alpha_power"
            else f"(feature strength {simulation.feature_strength}, preference bias "
            f"{simulation.preference_bias}), "
        )
        + f"observation rate {simulation.observation_rate}, "
        f"noise eps0 {simulation.eps0}, eps1 {simulation.eps1}.",
        "Test metrics against the clean labels. Early stopping and model selection used only the "
        "simulated feedback: held-out ELBO (Pyro family) or the method's own held-out risk (loss "
        "family) on 20% of the training pool. Bold: best non-oracle mean.",
    ]
    if result.positive_action_rate:
        rate = sum(result.positive_action_rate) / len(result.positive_action_rate)
        notes.append(f"Mean P(act | preferred) in the simulated training pool: {rate:.3f}.")
        if rate > 0.99:
            notes.append(
                "Every preferred response acts, so the feedback is the preference itself and naive is "
                "the oracle: lower the observation rate below the positive rate for silent positives."
            )
    for metric in ("auc", "mae"):
        if not {"implicitrm", "naive", "oracle"} <= summary.keys():
            break
        closed = result.gap_closed("implicitrm", metric)
        naive, oracle = (summary[m][metric]["mean"] for m in ("naive", "oracle"))
        if closed is None:
            notes.append(
                f"Naive is at or beyond the oracle on {_LABELS[metric]} ({naive:.3f} against "
                f"{oracle:.3f}): no gap to close."
            )
        elif closed < 0:
            implicitrm = summary["implicitrm"][metric]["mean"]
            notes.append(
                f"ImplicitRM is worse than naive on {_LABELS[metric]} ({implicitrm:.3f} against "
                f"{naive:.3f}; the oracle {oracle:.3f}): it closes none of the gap."
            )
        else:
            notes.append(
                f"ImplicitRM closes {closed:.1%} of the {_LABELS[metric]} gap between naive and the "
                f"oracle ({naive:.3f} to {oracle:.3f}, a gap of {abs(oracle - naive):.3f})."
            )
    if result.nuisance_sources:
        notes.append(
            "Nuisance estimates: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(result.nuisance_sources.items()))
            + "."
        )
    for warning in result.warnings:
        notes.append(f"Warning, {warning}")
    for method, reason in result.skipped.items():
        notes.append(f"Not run: {method} ({reason}).")
    return "\n".join(lines + notes) + "\n"


def plot_benchmark(
    result: BenchmarkResult, path: str | Path | None = None, metrics: tuple[str, ...] = ("auc", "mae")
) -> Figure:
    """Bar chart of each method's seed mean with a standard-deviation error bar, one panel per metric."""
    summary = result.summary
    methods = list(summary)
    figure, axes = new_figure(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), dpi=120, squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        means = [summary[m][metric]["mean"] for m in methods]
        stds = [summary[m][metric]["std"] for m in methods]
        colors = [
            "tab:green" if m == "implicitrm" else "tab:grey" if m == "oracle" else "tab:blue" for m in methods
        ]
        axis.bar(range(len(methods)), means, yerr=stds, color=colors, capsize=3)
        axis.set_xticks(range(len(methods)), methods, rotation=45, ha="right")
        axis.set_title(f"{_LABELS[metric]} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better)")
        finite = [v for v in means if math.isfinite(v)]
        if metric == "auc" and finite:
            axis.set_ylim(max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.03))
    figure.suptitle(f"{result.dataset}: {result.config.seeds} seeds, {result.config.setting} setting")
    return finish_figure(figure, path)


def plot_sweep(
    results: dict[float, BenchmarkResult], parameter: str, path: str | Path | None = None, metric: str = "auc"
) -> Figure:
    """``metric`` (seed mean ± std) against the swept ``parameter``, one line per method."""
    values = sorted(results)
    methods = list(next(iter(results.values())).summary)
    figure, axis = new_figure(figsize=(6.4, 4.0), dpi=120)
    for method in methods:
        means = [results[v].summary[method][metric]["mean"] for v in values]
        stds = [results[v].summary[method][metric]["std"] for v in values]
        style = {"linewidth": 2.5} if method in ("implicitrm", "naive", "oracle") else {"alpha": 0.6}
        axis.errorbar(values, means, yerr=stds, label=method, capsize=2, marker="o", **style)
    if parameter == "alpha" and min(values) > 0 and max(values) / min(values) > 20:
        axis.set_xscale("log")
    axis.set_xlabel(parameter + (" (smaller: stronger preference bias)" if parameter == "alpha" else ""))
    axis.set_ylabel(_LABELS[metric])
    axis.legend(fontsize=7, ncol=2)
    axis.set_title(f"{next(iter(results.values())).dataset}: {_LABELS[metric]} against {parameter}")
    return finish_figure(figure, path)


def sweep_table(results: dict[float, BenchmarkResult], parameter: str, metric: str = "auc") -> str:
    """Markdown table: one row per method, one column per swept value, ``metric`` mean ± std."""
    values = sorted(results)
    methods = list(next(iter(results.values())).summary)
    rows = ((method, *(mean_std(results[v].summary[method][metric]) for v in values)) for method in methods)
    return markdown_table(("method", *(f"{parameter} = {v:g}" for v in values)), rows)


def _is_ceiling(method: str) -> bool:
    """An estimator trained on the truth (the oracle) is the ceiling, never the best of the rest."""
    from pyro_irm.estimators import ESTIMATORS

    return method in ESTIMATORS and ESTIMATORS[method].needs_truth
