"""Analysis: metrics against the truth, ArviZ export, group diagnostics, unbiasedness, plots."""

from pyro_irm._lazy import exported_names, lazy_exports

_EXPORTS = {
    "pyro_irm.analysis.convert": (
        "from_groups",
        "head_inference_data",
        "row_values",
        "summary",
        "to_inference_data",
    ),
    "pyro_irm.analysis.group_diagnostics": (
        "GroupDiagnostics",
        "diagnose_groups",
        "diagnose_inference_data",
    ),
    "pyro_irm.analysis.metrics": (
        "auc",
        "evaluate",
        "expected_calibration_error",
        "group_accuracy",
        "group_log_loss",
        "label_metrics",
        "log_loss",
        "mae",
        "pairwise_accuracy",
        "prior_group_accuracy",
        "r2",
        "rmse",
    ),
    "pyro_irm.analysis.unbiasedness": (
        "OBJECTIVES",
        "UnbiasednessConfig",
        "UnbiasednessResult",
        "plot_unbiasedness",
        "run_unbiasedness_study",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = exported_names(_EXPORTS)
