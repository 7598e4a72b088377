"""The training loop every fit shares (:func:`pyro_irm.fit` and :func:`pyro_irm.finetune`).

Epochs of minibatch steps, a held-out score after each, the best epoch's state kept, early
stopping, progress on a terminal (and a line per epoch in the log), and a hook after each epoch
for checkpoints. What one epoch's steps are, how held-out rows are scored and what a state holds
belong to the caller's :class:`Trainer`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from tqdm.auto import tqdm

from pyro_irm.inference.config import TrainConfig
from pyro_irm.inference.result import FitHistory

logger = logging.getLogger(__name__)


class StopTraining(Exception):
    """Raised by a trainer's epoch to end training there: the loop keeps the best epoch so far
    (saying why, with ``reason``), or, without one, raises ``fallback`` instead."""

    def __init__(self, reason: str, fallback: Exception):
        super().__init__(reason)
        self.reason, self.fallback = reason, fallback


class Trainer(Protocol):
    """What the loop needs from a fit."""

    def train_epoch(self, epoch: int) -> float:
        """Run epoch ``epoch``'s optimizer steps; return the training loss per row."""

    def validation_score(self) -> float | None:
        """The held-out score after an epoch (higher is better), or None without held-out rows."""

    def snapshot(self) -> dict[str, Any]:
        """A copy of the state to keep if this epoch turns out the best."""


@dataclass
class LoopState:
    """Where a fit stands between epochs; a checkpoint saves it and a resumed fit starts from it."""

    history: FitHistory = field(default_factory=FitHistory)
    best_value: float = -float("inf")
    best_state: dict[str, Any] | None = None
    epochs_without_gain: int = 0
    next_epoch: int = 0


def run_epochs(
    trainer: Trainer,
    config: TrainConfig,
    state: LoopState | None = None,
    *,
    description: str,
    show_progress: bool = True,
    after_epoch=None,
) -> LoopState:
    """Train from ``state`` (a new fit without it) for ``config.max_epochs`` epochs at most,
    stopping after ``config.patience`` epochs without a held-out gain above ``config.min_delta``.

    ``after_epoch(epoch, state)`` runs after every epoch (a checkpoint). A trainer may end training
    inside an epoch by raising :class:`StopTraining`. Returns the final state;
    ``state.best_state`` is the snapshot of the best epoch (None without held-out rows: then the
    last epoch is the one kept, and ``history.best_epoch`` says so).
    """
    state = state or LoopState()
    history = state.history
    epochs = tqdm(
        range(state.next_epoch, config.max_epochs),
        desc=description,
        unit="epoch",
        disable=None if config.progress and show_progress else True,
        initial=state.next_epoch,
        total=config.max_epochs,
    )
    for epoch in epochs:
        if history.stopped_early:  # a resumed fit that had already stopped
            break
        started = time.perf_counter()
        try:
            history.train_loss.append(trainer.train_epoch(epoch))
        except StopTraining as stop:
            if state.best_state is None:
                raise stop.fallback from None
            logger.warning(
                "%s; training stopped in epoch %d, and the best held-out epoch, %d, is kept",
                stop.reason, epoch + 1, history.best_epoch + 1,
            )  # fmt: skip
            history.stopped_early = True
            break
        history.epoch_seconds.append(time.perf_counter() - started)
        value = trainer.validation_score()
        if value is None:
            history.best_epoch = epoch
        else:
            history.validation_score.append(value)
            if value > state.best_value + config.min_delta:
                state.best_value, history.best_epoch, state.epochs_without_gain = value, epoch, 0
                state.best_state = trainer.snapshot()
            else:
                state.epochs_without_gain += 1
                history.stopped_early = state.epochs_without_gain >= config.patience
        shown = {"loss": f"{history.train_loss[-1]:.4f}"}
        if value is not None:
            shown["heldout"] = f"{value:.4f}"
        epochs.set_postfix(shown)
        logger.info(
            "%s: epoch %d of %d, %s", description, epoch + 1, config.max_epochs,
            ", ".join(f"{k} {v}" for k, v in shown.items()),
        )  # fmt: skip
        state.next_epoch = epoch + 1
        if after_epoch is not None:
            after_epoch(epoch, state)
    epochs.close()
    return state
