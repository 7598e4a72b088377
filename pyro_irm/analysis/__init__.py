"""Analysis: metrics against the truth, ArviZ export, group diagnostics, unbiasedness, plots."""

from pyro_irm.analysis.convert import from_groups, row_values, summary, to_inference_data
from pyro_irm.analysis.group_diagnostics import GroupDiagnostics, diagnose_groups, diagnose_inference_data
from pyro_irm.analysis.metrics import (
    auc,
    evaluate,
    expected_calibration_error,
    group_accuracy,
    group_log_loss,
    label_metrics,
    log_loss,
    mae,
    pairwise_accuracy,
    prior_group_accuracy,
    r2,
    rmse,
)
from pyro_irm.analysis.unbiasedness import (
    OBJECTIVES,
    UnbiasednessConfig,
    UnbiasednessResult,
    plot_unbiasedness,
    run_unbiasedness_study,
)

__all__ = [
    "OBJECTIVES",
    "GroupDiagnostics",
    "UnbiasednessConfig",
    "UnbiasednessResult",
    "diagnose_groups",
    "diagnose_inference_data",
    "from_groups",
    "plot_unbiasedness",
    "row_values",
    "run_unbiasedness_study",
    "summary",
    "to_inference_data",
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
]
