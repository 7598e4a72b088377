"""Plots rendered with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_irm.inference.result import FitHistory  # noqa: E402


def plot_fit_history(history: FitHistory, path: str | Path, title: str = "", objective: str = "ELBO") -> Path:
    """Training and held-out objective per row against the epoch, as a PNG: the ELBO for the Pyro
    models, ``objective="minus risk"`` for the loss-based estimators (minus their risk)."""
    path = Path(path)
    figure, axis = plt.subplots(figsize=(6, 3.6), dpi=120)
    epochs = range(1, history.epochs + 1)
    axis.plot(epochs, [-loss for loss in history.train_loss], label=f"training {objective} / row")
    if history.validation_elbo:
        axis.plot(epochs, history.validation_elbo, label=f"held-out {objective} / row")
        if history.best_epoch >= 0:
            axis.axvline(history.best_epoch + 1, color="grey", linestyle=":", label="kept epoch")
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"{objective} per row" + (" (nats)" if objective == "ELBO" else ""))
    axis.set_title(title)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
