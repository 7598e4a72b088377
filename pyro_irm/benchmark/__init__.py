"""The semi-synthetic benchmark: every estimator on one data set, over seeds, against clean labels."""

from pyro_irm.benchmark.datasets import DATASETS, EmbeddedSet, ScoredSplit, load_embedded_set
from pyro_irm.benchmark.protocol import (
    METRICS,
    SWEEPABLE,
    BenchmarkConfig,
    BenchmarkResult,
    run_benchmark,
    run_sweep,
)
from pyro_irm.benchmark.report import format_table, plot_benchmark, plot_sweep, sweep_table

__all__ = [
    "DATASETS",
    "METRICS",
    "SWEEPABLE",
    "BenchmarkConfig",
    "BenchmarkResult",
    "EmbeddedSet",
    "ScoredSplit",
    "format_table",
    "load_embedded_set",
    "plot_benchmark",
    "plot_sweep",
    "run_benchmark",
    "run_sweep",
    "sweep_table",
]
