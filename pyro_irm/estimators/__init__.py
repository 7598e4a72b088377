"""Every estimator the toolkit fits, defined once: one class per kind of objective in a module per
family (:mod:`~pyro_irm.estimators.generative`, :mod:`~pyro_irm.estimators.pu`,
:mod:`~pyro_irm.estimators.weighting`, :mod:`~pyro_irm.estimators.noise`,
:mod:`~pyro_irm.estimators.ranking`), and the registry below, which the configuration, the
command line and the benchmark read. All of them fit the reward network ``f`` through
:func:`pyro_irm.fit` and return the same :class:`~pyro_irm.models.RewardModel`.

A new estimator: subclass :class:`Estimator` (``needs``, ``risk``) and :func:`register` an instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyro_irm.estimators.base import ESTIMATORS, SETTINGS, Estimator, RiskBatch, register
from pyro_irm.estimators.generative import Generative, ImplicitRM, Oracle
from pyro_irm.estimators.noise import NoiseCorrected
from pyro_irm.estimators.pu import NonNegativePU, UnbiasedPU
from pyro_irm.estimators.ranking import UnbiasedPairwise
from pyro_irm.estimators.weighting import DoublyRobust, InversePropensity, RelMF, SelfNormalized

if TYPE_CHECKING:
    from pyro_irm.channels import ChannelSpec
    from pyro_irm.models.base import FeedbackModel
    from pyro_irm.models.config import ModelConfig

for _estimator in (
    Generative("naive", "BCE with the action as the label (no action = negative)"),
    UnbiasedPU("upu", "unbiased PU risk, actions as labelled positives"),
    NonNegativePU("nnpu", "non-negative PU risk (Kiryo et al. 2017)"),
    InversePropensity("ips", "inverse-propensity weighting, clipped"),
    SelfNormalized("snips", "self-normalized inverse-propensity weighting"),
    DoublyRobust("dr", "doubly robust: imputed loss plus IPS correction", ("observational",)),
    NoiseCorrected("causalrm", "noise-corrected loss with propensity weighting"),
    UnbiasedPairwise("ubpr", "unbiased pairwise ranking within a prompt (Saito 2020)"),
    RelMF("relmf", "Rel-MF: unbiased pointwise loss, popularity propensity"),
    ImplicitRM("implicitrm", "the four-group Pyro model (ImplicitRM)"),
    Oracle("oracle", "BCE on the true preferences (the ceiling)"),
):
    register(_estimator)

METHOD_NAMES: tuple[str, ...] = tuple(ESTIMATORS)


def get_estimator(name: str) -> Estimator:
    """The registered estimator called ``name``."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; choose one of {', '.join(ESTIMATORS)} (a method a plugin registers "
            "needs its module imported first: --plugin MODULE on the command line)"
        ) from None


def check_setting(name: str, setting: str) -> None:
    """Raise when estimator ``name`` does not apply to ``setting``, saying why."""
    if setting not in get_estimator(name).settings:
        raise ValueError(
            f"method {name!r} needs an observational log (FeedbackData.observed, --observed-col): "
            "its correction term has zero mean only where the log says which rows were observed"
        )


def build_model(
    method: str,
    embedding_dim: int,
    context_dim: int,
    config: ModelConfig,
    channels: tuple[ChannelSpec, ...] | None = None,
    num_users: int = 0,
    context_names: tuple[str, ...] | None = None,
) -> FeedbackModel:
    """A fresh model for ``method``: ImplicitRM's four-group model with the declared ``channels``
    and ``num_users`` user effects, or the reward network alone. An estimator whose
    ``build_model`` takes ``context_names`` is told the context columns' names (to find a column
    among g's features by name, ``propensity_feature_index``)."""
    import inspect

    estimator = get_estimator(method)
    named = {}
    if context_names is not None and "context_names" in inspect.signature(estimator.build_model).parameters:
        named["context_names"] = tuple(context_names)
    return estimator.build_model(embedding_dim, context_dim, config, channels, num_users, **named)


def describe_methods() -> str:
    """One line per estimator, ``name: summary``, for help texts."""
    return "; ".join(f"{e.name} ({e.summary})" for e in ESTIMATORS.values())


__all__ = [
    "ESTIMATORS",
    "METHOD_NAMES",
    "SETTINGS",
    "Estimator",
    "RiskBatch",
    "build_model",
    "check_setting",
    "describe_methods",
    "get_estimator",
    "register",
]
