"""How right the posterior group assignments are, against the simulated truth.

Accuracy and log-loss of the most probable group, a confusion table (true group against assigned
group, and against the expected counts the probabilities imply), and calibration: for each group, rows
binned by their posterior probability of that group against the share that truly belong to it (the
reliability diagram).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import accuracy_score, brier_score_loss, confusion_matrix

from pyro_irm.analysis.convert import row_values
from pyro_irm.groups import GROUP_NAMES, NUM_GROUPS
from pyro_irm.tables import markdown_table


@dataclass(frozen=True)
class GroupDiagnostics:
    """Diagnostics of ``(N, 4)`` posterior group probabilities against ``(N,)`` true groups.

    Attributes:
        accuracy: share of rows whose most probable group is the true one.
        log_loss: mean ``-log P(true group)``, probabilities clipped at 1e-7.
        brier: mean squared error of the probability vector against the one-hot truth.
        calibration_error: expected calibration error over every (row, group) probability.
        confusion: ``(4, 4)`` counts, true group (rows) by most probable group (columns).
        expected_confusion: ``(4, 4)`` sums of probabilities, true group by group.
        reliability: per group, ``(bins, 3)`` rows of (mean predicted, observed share, count).
        rows: how many rows were scored.
        probabilities, true_groups: the ``(N, 4)`` and ``(N,)`` inputs (for the plots).
    """

    accuracy: float
    log_loss: float
    brier: float
    calibration_error: float
    confusion: np.ndarray
    expected_confusion: np.ndarray
    reliability: dict[str, np.ndarray]
    rows: int
    probabilities: np.ndarray = field(repr=False)
    true_groups: np.ndarray = field(repr=False)

    def as_dict(self) -> dict[str, float]:
        return {
            "group_accuracy": self.accuracy,
            "group_log_loss": self.log_loss,
            "group_brier": self.brier,
            "group_calibration_error": self.calibration_error,
            "rows": self.rows,
        }

    def confusion_table(self) -> str:
        """The confusion counts as a Markdown table (true group in rows)."""
        rows = ((name, *map(int, counts)) for name, counts in zip(GROUP_NAMES, self.confusion, strict=True))
        return markdown_table(("true \\ assigned", *GROUP_NAMES), rows)


def _array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def diagnose_groups(probabilities, true_groups, bins: int = 10) -> GroupDiagnostics:
    """Diagnostics of ``probabilities`` ``(N, 4)`` (rows summing to one) against ``true_groups``
    ``(N,)`` indices in ``GROUP_NAMES`` order; ``bins`` equal-width probability bins."""
    probabilities = _array(probabilities).astype(np.float64)
    true_groups = _array(true_groups).astype(np.int64).reshape(-1)
    if probabilities.ndim != 2 or probabilities.shape[1] != NUM_GROUPS:
        raise ValueError(f"probabilities: expected shape (rows, {NUM_GROUPS}), got {probabilities.shape}")
    if probabilities.shape[0] != true_groups.shape[0]:
        raise ValueError(
            f"true_groups: {true_groups.shape[0]} rows but probabilities has {probabilities.shape[0]}"
        )
    if probabilities.shape[0] == 0:
        raise ValueError("probabilities: no rows to diagnose")
    num_rows = probabilities.shape[0]
    # float32 posteriors sum to one only to 1e-7; scikit-learn checks the sums to 1e-8
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    one_hot = np.eye(NUM_GROUPS)[true_groups]
    assigned = probabilities.argmax(axis=1)
    confusion = confusion_matrix(true_groups, assigned, labels=range(NUM_GROUPS))
    expected = one_hot.T @ probabilities
    edges = np.linspace(0.0, 1.0, bins + 1)
    reliability = {}
    calibration = 0.0
    for group, name in enumerate(GROUP_NAMES):
        predicted, truth = probabilities[:, group], one_hot[:, group]
        which = np.clip(np.digitize(predicted, edges[1:-1]), 0, bins - 1)
        table = np.zeros((bins, 3))
        for b in range(bins):
            members = which == b
            count = members.sum()
            if count:
                table[b] = (predicted[members].mean(), truth[members].mean(), count)
                calibration += count * abs(table[b, 0] - table[b, 1])
            else:
                table[b] = (np.nan, np.nan, 0)
        reliability[name] = table
    picked = probabilities[np.arange(num_rows), true_groups].clip(1e-7, 1.0)
    return GroupDiagnostics(
        accuracy=float(accuracy_score(true_groups, assigned)),
        log_loss=float(-np.log(picked).mean()),
        brier=float(brier_score_loss(true_groups, probabilities, labels=range(NUM_GROUPS))),
        calibration_error=float(calibration / (num_rows * NUM_GROUPS)),
        confusion=confusion,
        expected_confusion=expected,
        reliability=reliability,
        rows=num_rows,
        probabilities=probabilities,
        true_groups=true_groups,
    )


def diagnose_inference_data(idata, bins: int = 10, no_action_only: bool = False) -> GroupDiagnostics:
    """:func:`diagnose_groups` on ArviZ data from :func:`pyro_irm.analysis.to_inference_data`
    (needs the simulated truth in ``constant_data``). ``no_action_only`` keeps the rows with y = 0,
    where the groups are uncertain."""
    probabilities = row_values(idata, "group_probability")
    try:
        true_groups = idata["constant_data"]["true_group"].values
    except KeyError:
        raise ValueError(
            "the data has no simulated truth (constant_data.true_group) to check against"
        ) from None
    if no_action_only:
        keep = idata["observed_data"]["action"].values == 0
        probabilities, true_groups = probabilities[keep], true_groups[keep]
    return diagnose_groups(probabilities, true_groups, bins)
