"""Model classes by method name."""

from __future__ import annotations

from collections.abc import Sequence

from pyro_irm.channels import ChannelSpec
from pyro_irm.models.base import FeedbackModel
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.implicit import ImplicitFeedbackModel
from pyro_irm.models.observed import ObservedPreferenceModel

# Every method but implicitrm fits the reward network alone; the loss-based ones differ in the risk.
MODEL_CLASSES: dict[str, type[FeedbackModel]] = {
    "implicitrm": ImplicitFeedbackModel,
    **{
        name: ObservedPreferenceModel
        for name in ("naive", "oracle", "upu", "nnpu", "ips", "snips", "dr", "causalrm", "ubpr", "relmf")
    },
}


def build_model(
    method: str,
    embedding_dim: int,
    context_dim: int,
    config: ModelConfig,
    channels: Sequence[ChannelSpec] | None = None,
    num_users: int = 0,
) -> FeedbackModel:
    """A fresh model for ``method``: ImplicitRM's four-group model with the declared ``channels``
    and ``num_users`` user effects, or the reward network alone."""
    try:
        cls = MODEL_CLASSES[method]
    except KeyError:
        raise ValueError(f"method must be one of {sorted(MODEL_CLASSES)}, got {method!r}") from None
    if cls is ImplicitFeedbackModel:
        return ImplicitFeedbackModel(embedding_dim, context_dim, config, channels, num_users)
    return cls(embedding_dim, context_dim, config)
