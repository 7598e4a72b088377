"""Which assumption separates preference from propensity, and a warning when none does.

From one binary action, ``P(y=1 | e) = P(r=1 | e) * P(o=1 | e, r=1)`` fixes only a product
(METHOD.md). This module names what pins the two factors down for a given model and data.
"""

from __future__ import annotations

import warnings

from pyro_irm.models.config import ModelConfig


class IdentifiabilityWarning(UserWarning):
    """No assumption in the model or data separates the reward from the propensity."""


def identifying_assumptions(config: ModelConfig, context_dim: int) -> list[str]:
    """The assumptions that separate f from g here; empty when nothing does."""
    assumptions = []
    if context_dim > 0 and config.propensity_features in ("context", "both"):
        assumptions.append(f"propensity features: g sees {context_dim} context column(s) that f does not")
    return assumptions


def warn_if_unidentified(config: ModelConfig, context_dim: int) -> list[str]:
    """Warn with :class:`IdentifiabilityWarning` when :func:`identifying_assumptions` is empty."""
    assumptions = identifying_assumptions(config, context_dim)
    if not assumptions:
        warnings.warn(
            "Nothing separates the reward from the propensity: g sees only the embedding that f "
            "sees, so P(y=1|e) = P(r=1|e) P(o=1|e) fixes only their product and the split rests on "
            "the networks' inductive bias. Give context columns that drive propensity but not "
            "preference (position, length, format) and propensity_features='both' or 'context'.",
            IdentifiabilityWarning,
            stacklevel=3,
        )
    return assumptions
