"""Which assumption separates preference from propensity, and a warning when none does.

From one binary action, ``P(y=1 | e) = P(r=1 | e) * P(o=1 | e, r=1)`` fixes only a product
(docs/method.md). This module names what pins the two factors down for a given model and data:
context that g sees and f does not, users (an engagement effect f never sees), three or more
channels conditionally independent given the groups (Kruskal's theorem), or explicit labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from pyro_irm.channels import ChannelSpec
from pyro_irm.models.config import ModelConfig


class IdentifiabilityWarning(UserWarning):
    """No assumption in the model or data separates the reward from the propensity."""


def ignores_engagement(channel) -> bool:
    """Whether a channel (a component, or a declaration, read through its kind's default
    component) says its value does not depend on engagement (``uses_engagement = False``)."""
    if isinstance(channel, ChannelSpec):
        from pyro_irm.models.channel import kind_component

        channel = kind_component(channel)
    return getattr(channel, "uses_engagement", True) is False


_READS_OF_FEATURES = {"embedding": ("embedding",), "context": ("context",), "both": ("embedding", "context")}


def engagement_reads(config: ModelConfig, engagement=None) -> frozenset[str]:
    """What the engagement network g reads: ``"embedding"``, ``"context"`` (every context column)
    and context column names. A component declares it as a class attribute ``reads`` (for example
    ``("embedding", "position")``); without one it is what ``config.propensity_features`` feeds g."""
    declared = getattr(engagement, "reads", None)
    if declared is not None:
        return frozenset((declared,) if isinstance(declared, str) else declared)
    return frozenset(_READS_OF_FEATURES[config.propensity_features])


def read_context_columns(reads: frozenset[str], context_names: Sequence[str]) -> tuple[str, ...]:
    """The context columns among ``context_names`` that an engagement network reading ``reads`` sees."""
    if "context" in reads:
        return tuple(context_names)
    return tuple(name for name in context_names if name in reads)


def check_engagement_reads(engagement, config: ModelConfig, context_names: Sequence[str]) -> None:
    """Refuse an engagement network that declares (``reads``) it reads what the data lack; one that
    declares nothing reads what ``propensity_features`` gives it, checked where g is built.

    Raises:
        ValueError: naming the component and each missing column.
    """
    if getattr(engagement, "reads", None) is None:
        return
    reads = engagement_reads(config, engagement)
    missing = sorted(reads - {"embedding", "context"} - set(context_names))
    if "context" in reads and not context_names:
        missing.append("context")
    if missing:
        have = ", ".join(context_names) or "none"
        raise ValueError(
            f"{type(engagement).__name__} declares it reads {', '.join(missing)}, but the data's context "
            f"columns are: {have}; name them with --context-col (LogSchema.context)"
        )


def identifying_assumptions(
    config: ModelConfig,
    context_dim: int,
    channels: Sequence = (),
    num_users: int = 0,
    labelled_rows: int = 0,
    engagement=None,
) -> list[str]:
    """The assumptions that separate f from g here; empty when nothing does. ``channels`` are
    declarations or components; one whose value ignores engagement (a rater) pins the split.
    ``engagement``: the engagement component, whose ``reads`` (:func:`engagement_reads`) says
    whether g sees context that f does not."""
    assumptions = []
    raters = [getattr(c, "name", None) or c.spec.name for c in channels if ignores_engagement(c)]
    if raters:
        assumptions.append(
            f"channels whose value ignores engagement ({', '.join(raters)}): a view of the preference "
            "alone, as labels are"
        )
    if context_dim > 0 and engagement_reads(config, engagement) - {"embedding"}:
        assumptions.append("engagement features: g sees context column(s) that f does not")
    if len(channels) >= 3:
        assumptions.append(
            f"{len(channels)} action channels, conditionally independent given the groups "
            "(a latent-class model with three or more indicators is identified)"
        )
    if num_users > 1:
        assumptions.append(f"users: {num_users} per-user engagement effects that the reward never sees")
    if labelled_rows > 0:
        assumptions.append(f"explicit labels: {labelled_rows} row(s) with an observed preference")
    return assumptions


def warn_if_unidentified(
    config: ModelConfig,
    context_dim: int,
    channels: Sequence = (),
    num_users: int = 0,
    labelled_rows: int = 0,
    engagement=None,
) -> list[str]:
    """Warn with :class:`IdentifiabilityWarning` when :func:`identifying_assumptions` is empty."""
    assumptions = identifying_assumptions(config, context_dim, channels, num_users, labelled_rows, engagement)
    if not assumptions:
        warnings.warn(
            "Nothing separates the reward from the propensity: g sees only the embedding that f "
            "sees, so P(y=1|e) = P(r=1|e) P(o=1|e) fixes only their product and the split rests on "
            "the networks' inductive bias. Any one of these would identify it: context columns "
            "that drive propensity but not preference (--context-col position, with "
            "--propensity-features both or context); a user column (--user-col); three or more "
            "action channels (--action-col, --negative-action-col, --channel COL:KIND); a rater's "
            "verdict, which ignores engagement (--channel COL:annotation); or explicit labels on a "
            "few rows (--label-col with --fit-labels).",
            IdentifiabilityWarning,
            stacklevel=3,
        )
    return assumptions
