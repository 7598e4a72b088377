"""The generative family, fit by SVI on a Pyro model: ImplicitRM's four groups, and the reward
network alone with the action (naive) or the true preference (oracle) as the label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pyro_irm.estimators.base import Estimator, Family, Setting

if TYPE_CHECKING:
    import torch

    from pyro_irm.channels import ChannelSpec
    from pyro_irm.data.feedback import FeedbackData
    from pyro_irm.estimators.config import EstimatorConfig
    from pyro_irm.models.base import FeedbackModel
    from pyro_irm.models.config import ModelConfig


@dataclass(frozen=True)
class Generative(Estimator):
    """A Pyro model fit by SVI; the held-out ELBO selects and stops it."""

    family: ClassVar[Family] = "pyro"


@dataclass(frozen=True)
class ImplicitRM(Generative):
    """The four-group model: preference r and engagement o latent, every channel an emission."""

    latent_groups: ClassVar[bool] = True

    def learning_signal(self, data: FeedbackData, actions: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """Every discrete channel (binary, count, ordinal, ...): continuous amounts such as dwell
        always vary, and alone do not say who acted."""
        discrete = [k for k, c in enumerate(data.channels) if c.kind != "continuous"]
        return data.action_matrix[:, discrete], [f"channel {data.channels[k].name!r}" for k in discrete]

    def needs(self, setting: Setting, config: EstimatorConfig) -> frozenset[str]:
        return frozenset({"flip_rates"}) if setting == "observational" else frozenset()

    def observed_actions(self, data: FeedbackData) -> torch.Tensor:
        """Every action channel, ``(N, K)``."""
        return data.actions

    def build_model(
        self,
        embedding_dim: int,
        context_dim: int,
        config: ModelConfig,
        channels: tuple[ChannelSpec, ...] | None = None,
        num_users: int = 0,
    ) -> FeedbackModel:
        from pyro_irm.models.implicit import ImplicitFeedbackModel

        return ImplicitFeedbackModel(embedding_dim, context_dim, config, channels, num_users)


@dataclass(frozen=True)
class Oracle(Generative):
    """The reward network fit to the true preferences: the ceiling, on simulated data or a log
    whose every row has an explicit label."""

    needs_truth: bool = True

    def learning_signal(self, data: FeedbackData, actions: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        return actions[:, None], ["the true preference"]

    def observed_actions(self, data: FeedbackData) -> torch.Tensor:
        if data.truth is not None:
            return data.truth.preference
        if data.labels is not None and not data.labels.isnan().any():
            return data.labels
        raise ValueError(
            "method='oracle' needs the true preference of every row: simulated truth "
            "(FeedbackData.truth) or an explicit label on every row (FeedbackData.labels)"
        )
