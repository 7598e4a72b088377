"""Analysis: metrics against the truth and plots."""

from pyro_irm.analysis.metrics import (
    auc,
    evaluate,
    expected_calibration_error,
    group_accuracy,
    group_log_loss,
    log_loss,
    mae,
    prior_group_accuracy,
    rmse,
)

__all__ = [
    "auc",
    "evaluate",
    "expected_calibration_error",
    "group_accuracy",
    "group_log_loss",
    "log_loss",
    "mae",
    "prior_group_accuracy",
    "rmse",
]
