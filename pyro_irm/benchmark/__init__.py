"""The semi-synthetic benchmark: every estimator on one data set, over seeds, against clean labels."""

from pyro_irm._lazy import exported_names, lazy_exports

_EXPORTS = {
    "pyro_irm.benchmark.config": (
        "DATASETS",
        "METRICS",
        "SWEEPABLE",
        "BenchmarkConfig",
        "UserModel",
        "default_simulation",
    ),
    "pyro_irm.benchmark.datasets": (
        "EmbeddedSet",
        "ScoredSplit",
        "load_embedded_set",
    ),
    "pyro_irm.benchmark.protocol": (
        "BenchmarkResult",
        "run_benchmark",
        "run_sweep",
    ),
    "pyro_irm.benchmark.summary": (
        "format_table",
        "plot_benchmark",
        "plot_sweep",
        "sweep_table",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = exported_names(_EXPORTS)
