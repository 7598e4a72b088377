"""Generative models, their guides and the fitted reward model.

One assumption per module: ``propensity`` (how o depends on the row and on r), ``channel`` (how y
arises from r and o), ``implicit`` (the four-group model), ``observed`` (naive and oracle).
"""

from pyro_irm._lazy import exported_names, lazy_exports

_EXPORTS = {
    "pyro_irm.models.base": ("FeedbackModel", "Rows"),
    "pyro_irm.models.channel": (
        "Channel",
        "LabelChannel",
        "LogNormalChannel",
        "NoisyAndChannel",
        "SignedBinaryChannel",
        "register_channel",
    ),
    "pyro_irm.models.config": ("ModelConfig",),
    "pyro_irm.models.guides": (
        "EmptyGuide",
        "StratificationGuide",
    ),
    "pyro_irm.models.implicit": ("ImplicitFeedbackModel",),
    "pyro_irm.models.observed": ("ObservedPreferenceModel",),
    "pyro_irm.models.propensity": ("PropensityNetwork",),
    "pyro_irm.models.reward_model": ("RewardModel",),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = exported_names(_EXPORTS)
