"""Data: the feedback container, logs with text and their loaders, real preference data sets, and the
simulator with ground truth."""

from pyro_irm._lazy import exported_names, lazy_exports

_EXPORTS = {
    "pyro_irm.data.feedback": (
        "FeedbackData",
        "GroundTruth",
        "split_indices",
    ),
    "pyro_irm.data.logs": (
        "FeedbackLog",
        "LoadReport",
        "LogFormatError",
        "LogSchema",
        "read_log",
        "write_records",
    ),
    "pyro_irm.data.preference_sets": (
        "PREFERENCE_SETS",
        "ScoredResponses",
        "load_preference_set",
        "simulate_log",
    ),
    "pyro_irm.data.samples": ("oasst_sample", "ultrafeedback_sample"),
    "pyro_irm.data.simulation": (
        "SimulationConfig",
        "simulate",
        "simulate_from_scores",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = exported_names(_EXPORTS)
