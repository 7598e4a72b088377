"""What a fit returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pyro_irm.inference.config import TrainConfig
from pyro_irm.models.reward_model import RewardModel


@dataclass
class FitHistory:
    """Per-epoch record: ``train_loss`` is the minibatch negative ELBO (or, for the loss-based
    methods, the risk) per row averaged over the epoch; ``validation_score`` the held-out score per
    row that selects the epoch: the exact ELBO, or minus the method's own risk (empty without a
    validation set)."""

    train_loss: list[float] = field(default_factory=list)
    validation_score: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        return len(self.train_loss)


@dataclass
class FitResult:
    """The fitted reward model, how the fit went, and which rows it trained and validated on."""

    reward_model: RewardModel
    history: FitHistory
    config: TrainConfig
    train_indices: torch.Tensor
    validation_indices: torch.Tensor
    device: str
    nuisance_sources: dict[str, str] = field(default_factory=dict)
    is_main_process: bool = True  # False in the other processes of a multi-process fit
    # The preference/engagement split check (pyro_irm.inference.identification), where it applies.
    identification: Any = None

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def rows_per_second(self) -> float:
        """Training rows processed per second, averaged over epochs."""
        seconds = sum(self.history.epoch_seconds)
        return len(self.train_indices) * self.history.epochs / seconds if seconds else float("nan")

    @property
    def best_validation_score(self) -> float:
        """The held-out score per row of the kept epoch (-inf without a validation set)."""
        history = self.history
        if not history.validation_score or history.best_epoch < 0:
            return -float("inf")
        return history.validation_score[history.best_epoch]
