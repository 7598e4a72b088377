"""Generative models, their guides and the fitted reward model.

One assumption per module: ``propensity`` (how o depends on the row and on r), ``channel`` (how y
arises from r and o), ``implicit`` (the four-group model), ``observed`` (naive and oracle).
"""

from pyro_irm.models.base import FeedbackModel
from pyro_irm.models.channel import (
    Channel,
    LabelChannel,
    LogNormalChannel,
    NoisyAndChannel,
    SignedBinaryChannel,
    register_channel,
)
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.guides import EmptyGuide, StratificationGuide
from pyro_irm.models.implicit import ImplicitFeedbackModel
from pyro_irm.models.observed import ObservedPreferenceModel
from pyro_irm.models.propensity import PropensityNetwork
from pyro_irm.models.registry import build_model
from pyro_irm.models.reward_model import RewardModel

__all__ = [
    "Channel",
    "LabelChannel",
    "LogNormalChannel",
    "SignedBinaryChannel",
    "register_channel",
    "EmptyGuide",
    "FeedbackModel",
    "ImplicitFeedbackModel",
    "ModelConfig",
    "NoisyAndChannel",
    "ObservedPreferenceModel",
    "PropensityNetwork",
    "RewardModel",
    "StratificationGuide",
    "build_model",
]
