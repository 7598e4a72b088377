"""Plots drawn on matplotlib ``Figure`` objects, without pyplot: no backend is chosen or switched
(a notebook's inline display is left alone), and ``savefig`` renders the files with Agg."""

from __future__ import annotations

from pathlib import Path

from pyro_irm.atomic import save_figure
from pyro_irm.inference.result import FitHistory


def new_figure(*grid: int, figsize: tuple[float, float], dpi: int = 120, **options):
    """``(figure, axes)``: a fresh ``Figure`` and ``figure.subplots(*grid, **options)``."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=dpi)
    return figure, figure.subplots(*grid, **options)


def plot_fit_history(history: FitHistory, path: str | Path, title: str = "", objective: str = "ELBO") -> Path:
    """Training and held-out objective per row against the epoch, as a PNG: the ELBO for the Pyro
    models, ``objective="minus risk"`` for the loss-based estimators (minus their risk)."""
    path = Path(path)
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
    figure.tight_layout()
    save_figure(figure, path)
    return path


def plot_group_reliability(diagnostics, path: str | Path, title: str = "") -> Path:
    """Reliability diagram of the posterior groups: one panel per group, the mean posterior
    probability of each bin against the share of its rows truly in the group."""
    from pyro_irm.groups import GROUP_NAMES

    path = Path(path)
    figure, axes = new_figure(1, len(GROUP_NAMES), figsize=(13, 3.4), dpi=120, sharey=True)
    for axis, name in zip(axes, GROUP_NAMES, strict=True):
        table = diagnostics.reliability[name]
        filled = table[:, 2] > 0
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
        axis.plot(table[filled, 0], table[filled, 1], marker="o")
        axis.set_title(name.replace("_", " "))
        axis.set_xlabel("posterior probability")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
    axes[0].set_ylabel("share truly in the group")
    figure.suptitle(title or f"group calibration (ECE {diagnostics.calibration_error:.3f})")
    figure.tight_layout()
    save_figure(figure, path)
    return path


def plot_group_confusion(diagnostics, path: str | Path, title: str = "") -> Path:
    """The confusion table (true group by most probable group) as a heat map, each row normalized."""
    from pyro_irm.groups import GROUP_NAMES

    path = Path(path)
    counts = diagnostics.confusion.astype(float)
    shares = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    figure, axis = new_figure(figsize=(5.6, 4.6), dpi=120)
    image = axis.imshow(shares, vmin=0, vmax=1, cmap="Blues")
    labels = [name.replace("_", "\n") for name in GROUP_NAMES]
    axis.set_xticks(range(len(GROUP_NAMES)), labels, fontsize=8)
    axis.set_yticks(range(len(GROUP_NAMES)), labels, fontsize=8)
    axis.set_xlabel("assigned group")
    axis.set_ylabel("true group")
    for i in range(len(GROUP_NAMES)):
        for j in range(len(GROUP_NAMES)):
            color = "white" if shares[i, j] > 0.6 else "black"
            axis.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8, color=color)
    figure.colorbar(image, ax=axis, label="share of the true group")
    axis.set_title(title or f"group accuracy {diagnostics.accuracy:.3f}")
    figure.tight_layout()
    save_figure(figure, path)
    return path
