"""Plots drawn on matplotlib ``Figure`` objects, without pyplot: no backend is chosen or switched
(a notebook's inline display is left alone). Every plot function returns its ``Figure`` and, given
a path, also writes it there as a PNG (rendered with Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyro_irm.atomic import save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pyro_irm.inference.result import FitHistory


def new_figure(*grid: int, figsize: tuple[float, float], dpi: int = 120, **options):
    """``(figure, axes)``: a fresh ``Figure`` and ``figure.subplots(*grid, **options)``."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=dpi)
    return figure, figure.subplots(*grid, **options)


def finish_figure(figure: Figure, path: str | Path | None) -> Figure:
    """Lay ``figure`` out, write it to ``path`` when given, and return it."""
    figure.tight_layout()
    if path is not None:
        save_figure(figure, Path(path))
    return figure


def plot_fit_history(
    history: FitHistory, path: str | Path | None = None, title: str = "", objective: str = "ELBO"
) -> Figure:
    """Training and held-out objective per row against the epoch, as a PNG: the ELBO for the Pyro
    models, ``objective="minus risk"`` for the loss-based estimators (minus their risk)."""
    figure, axis = new_figure(figsize=(6, 3.6), dpi=120)
    epochs = range(1, history.epochs + 1)
    axis.plot(epochs, [-loss for loss in history.train_loss], label=f"training {objective} / row")
    if history.validation_score:
        axis.plot(epochs, history.validation_score, label=f"held-out {objective} / row")
        if history.best_epoch >= 0:
            axis.axvline(history.best_epoch + 1, color="grey", linestyle=":", label="kept epoch")
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"{objective} per row" + (" (nats)" if objective == "ELBO" else ""))
    axis.set_title(title)
    axis.legend(loc="lower right")
    return finish_figure(figure, path)


def plot_group_reliability(diagnostics, path: str | Path | None = None, title: str = "") -> Figure:
    """Reliability diagram of the posterior groups (scikit-learn's ``CalibrationDisplay``): one
    panel per group, the mean posterior probability of each bin against the share of its rows
    truly in the group. ``diagnostics`` needs the rows' probabilities and true groups."""
    from sklearn.calibration import CalibrationDisplay

    from pyro_irm.groups import GROUP_NAMES

    bins = len(next(iter(diagnostics.reliability.values())))
    figure, axes = new_figure(1, len(GROUP_NAMES), figsize=(13, 3.4), dpi=120, sharey=True)
    for group, (axis, name) in enumerate(zip(axes, GROUP_NAMES, strict=True)):
        CalibrationDisplay.from_predictions(
            diagnostics.true_groups == group,
            diagnostics.probabilities[:, group],
            n_bins=bins,
            ax=axis,
            name=name.replace("_", " "),
        )
        axis.set_title(name.replace("_", " "))
        axis.set_xlabel("posterior probability")
        axis.set_ylabel("")
        axis.get_legend().remove()
    axes[0].set_ylabel("share truly in the group")
    figure.suptitle(title or f"group calibration (ECE {diagnostics.calibration_error:.3f})")
    return finish_figure(figure, path)


def plot_group_confusion(diagnostics, path: str | Path | None = None, title: str = "") -> Figure:
    """The confusion matrix (true group by most probable group, scikit-learn's
    ``ConfusionMatrixDisplay``), each row normalized to the share of its true group."""
    from sklearn.metrics import ConfusionMatrixDisplay

    from pyro_irm.groups import GROUP_NAMES

    counts = diagnostics.confusion.astype(float)
    shares = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    figure, axis = new_figure(figsize=(5.6, 4.6), dpi=120)
    labels = [name.replace("_", "\n") for name in GROUP_NAMES]
    display = ConfusionMatrixDisplay(shares, display_labels=labels)
    display.plot(ax=axis, cmap="Blues", values_format=".2f", colorbar=True)
    display.im_.set_clim(0, 1)
    axis.tick_params(labelsize=8)
    axis.set_xlabel("assigned group")
    axis.set_ylabel("true group")
    axis.set_title(title or f"group accuracy {diagnostics.accuracy:.3f}")
    return finish_figure(figure, path)
