"""Analysis: metrics against the truth and plots."""

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

__all__ = [
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
