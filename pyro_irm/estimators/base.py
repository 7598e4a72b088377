"""What an estimator is: a name, the settings it applies to, the nuisance quantities it needs, and
either a generative model fit by SVI (``family='pyro'``) or a risk over rows (``family='loss'``).

A new estimator is one subclass registered with :func:`register`; the configuration, the command
line and the benchmark read its name, summary and settings from the registry.

The family modules import torch inside the methods that compute, not at the top: the registry is
read by ``pyro-irm --help``, which must not pay for loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    import torch

    from pyro_irm.channels import ChannelSpec
    from pyro_irm.data.feedback import FeedbackData
    from pyro_irm.estimators.config import EstimatorConfig
    from pyro_irm.estimators.nuisance import Nuisance
    from pyro_irm.models.base import FeedbackModel
    from pyro_irm.models.config import ModelConfig

Family = Literal["pyro", "loss"]
Setting = Literal["implicit", "observational"]
SETTINGS: tuple[Setting, ...] = ("implicit", "observational")


@dataclass(frozen=True)
class RiskBatch:
    """What a loss-family risk sees on a minibatch of ``B`` rows.

    ``logits``, ``actions``: ``(B,)`` rewards ``f(e)`` and the logged action (or feedback value);
    ``propensity``: ``(B,)`` clipped weights' denominators, or None; ``observed``: ``(B,)`` o of an
    observational log, else None; ``imputation``: ``(B,)`` imputed P(y = 1) (doubly robust), or None;
    ``partner_*``: the same for each row's partner of one prompt (pairwise estimators), else None.
    """

    logits: torch.Tensor
    actions: torch.Tensor
    nuisance: Nuisance
    config: EstimatorConfig
    propensity: torch.Tensor | None = None
    observed: torch.Tensor | None = None
    imputation: torch.Tensor | None = None
    partner_logits: torch.Tensor | None = None
    partner_actions: torch.Tensor | None = None
    partner_propensity: torch.Tensor | None = None

    @property
    def observational(self) -> bool:
        return self.observed is not None


@dataclass(frozen=True)
class Estimator:
    """One estimator. Subclasses set ``family`` and override what differs."""

    name: str
    summary: str
    settings: tuple[Setting, ...] = SETTINGS
    needs_truth: bool = False
    family: ClassVar[Family]
    pairwise: ClassVar[bool] = False  # its risk compares each row with a partner of the same prompt
    # A latent-group model of every channel: it reads each channel, users, a logged o and explicit
    # labels, is fit by enumerating its groups (or an amortized guide) and scores posterior groups.
    # Everything that depends on this asks the estimator, never its name.
    latent_groups: ClassVar[bool] = False
    # Its risk estimate is unbounded below (uPU; implicit IPS, whose weight 1 - y / p is negative on
    # acted rows): a training risk running away below zero means it overfit, not diverged, and
    # the fit keeps its best held-out epoch.
    risk_unbounded_below: ClassVar[bool] = False

    def needs(self, setting: Setting, config: EstimatorConfig) -> frozenset[str]:
        """The nuisance quantities (see :func:`~pyro_irm.estimators.nuisance.estimate_nuisance`)
        this estimator needs in ``setting``."""
        return frozenset()

    def observed_actions(self, data: FeedbackData) -> torch.Tensor:
        """What the model observes as y: the single combined action (any positive channel,
        :attr:`~pyro_irm.data.FeedbackData.action`) ``(N,)`` unless the estimator reads more."""
        return data.action

    def learning_signal(self, data: FeedbackData, actions: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """``(N, K)`` columns of which at least one must take two values for a reward to be
        learned, and what each is (for the message when none does): the observed action."""
        return actions.reshape(len(actions), -1)[:, :1], ["the action (any positive channel)"]

    def weighting(self, config: EstimatorConfig) -> str | None:
        """How its propensity is normalized: 'snips' rescales it by one constant (see
        :class:`~pyro_irm.estimators.risk_objective.LossObjective`); None or another name leaves it."""
        return None

    def uses_relative_propensity(self, config: EstimatorConfig) -> bool:
        return False

    def build_model(
        self,
        embedding_dim: int,
        context_dim: int,
        config: ModelConfig,
        channels: tuple[ChannelSpec, ...] | None = None,
        num_users: int = 0,
    ) -> FeedbackModel:
        """The model whose reward network ``f`` is fit: the reward network alone, unless the
        estimator is a generative model of more than the reward."""
        from pyro_irm.models.observed import ObservedPreferenceModel

        return ObservedPreferenceModel(embedding_dim, context_dim, config)

    def risk(self, batch: RiskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(objective, risk)`` on a batch: the scalar to differentiate and the risk estimate
        (they differ only where a step corrects the risk, as nnPU's does)."""
        raise NotImplementedError(f"{self.name} is fit by SVI on its generative model, not by a risk")


ESTIMATORS: dict[str, Estimator] = {}


def register(estimator: Estimator) -> Estimator:
    """Add ``estimator`` to the registry under its name (a later one with the same name replaces it)."""
    ESTIMATORS[estimator.name] = estimator
    return estimator
