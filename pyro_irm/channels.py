"""Action channels: what each column of a log's actions means (docs/method.md, "The generative model").

A log can record several actions per shown response: copy, thumbs up, regenerate, dwell seconds.
Each is declared once, by name, with its **polarity** (positive: more likely when the response is
preferred; negative: more likely when it is not) and its **kind**: binary 0/1, count (reaction
tallies), ordinal (ratings 1-5), continuous (seconds), or a kind of one's own (:func:`register_kind`).
The data layer keeps one column per channel; the model turns each declaration into an
emission component (:mod:`pyro_irm.models.channel`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Polarity = Literal["positive", "negative"]


@dataclass(frozen=True)
class ChannelKind:
    """A channel's value domain and its default emission component.

    ``component``: class path (``module:Class``) of the emission built for a channel of this kind
    (see :mod:`pyro_irm.models.channel`); ``acted``: its 0/1 values are an action that single-action
    estimators see; ``zero_one``: its values are 0 or 1; ``integer`` and ``low``: the values' domain
    (``levels``, for an ordinal channel, bounds it above). A missing value (NaN) is always allowed:
    that channel is left out of that row's likelihood, which the model does exactly (its
    log-probability is masked there).
    """

    name: str
    summary: str
    component: str
    acted: bool = False
    integer: bool = False
    low: float | None = None
    zero_one: bool = False

    def problem(self, value: float, spec: ChannelSpec) -> str | None:
        """Why a logged ``value`` is outside this kind's domain, or None (NaN is missing, not wrong)."""
        if math.isnan(value):
            return None
        if (self.name == "binary" or self.zero_one) and value not in (0.0, 1.0):
            what = "action" if self.acted else "value"
            return f"a {self.name} {what} must be 0 or 1 (declare its kind, or give a threshold)"
        if not math.isfinite(value):
            return "must be finite"
        if self.integer and value != int(value):
            return f"a {self.name} channel takes whole numbers"
        if self.low is not None and value < self.low:
            return f"a {self.name} channel takes values of at least {self.low:g}"
        if spec.levels is not None and value > spec.levels:
            return f"an ordinal channel of {spec.levels} levels takes 1 to {spec.levels}"
        return None


CHANNEL_KINDS: dict[str, ChannelKind] = {}


def register_kind(kind: ChannelKind) -> ChannelKind:
    """Add a channel kind (its name is what ``ChannelSpec.kind`` and the schema declare)."""
    CHANNEL_KINDS[kind.name] = kind
    return kind


for _kind in (
    ChannelKind("binary", "0/1 actions (copy, thumbs up)", "pyro_irm.models.channel:SignedBinaryChannel",
                acted=True),
    ChannelKind("count", "tallies 0, 1, 2, ... (reactions, +1s)", "pyro_irm.models.channel:CountChannel",
                integer=True, low=0),
    ChannelKind("ordinal", "ratings 1 to levels (stars)", "pyro_irm.models.channel:OrdinalChannel",
                integer=True, low=1),
    ChannelKind("continuous", "non-negative amounts (dwell seconds)",
                "pyro_irm.models.channel:LogNormalChannel", low=0),
    ChannelKind("annotation", "a rater's 0/1 verdict, flipped at learned rates whatever the engagement",
                "pyro_irm.models.channel:AnnotatorChannel", integer=True, low=0, zero_one=True),
):  # fmt: skip
    register_kind(_kind)


@dataclass(frozen=True)
class ChannelSpec:
    """One action channel: its column ``name``, ``polarity`` and ``kind`` (a name in
    :data:`CHANNEL_KINDS`: binary, count, ordinal, continuous or one registered); ``levels``: the
    number of ratings of an ordinal channel (values 1 to levels; default 5)."""

    name: str
    polarity: Polarity = "positive"
    kind: str = "binary"
    levels: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a channel needs a name")
        if self.polarity not in ("positive", "negative"):
            raise ValueError(f"channel {self.name!r}: polarity must be 'positive' or 'negative'")
        if self.kind not in CHANNEL_KINDS:
            raise ValueError(
                f"channel {self.name!r}: kind must be one of {', '.join(CHANNEL_KINDS)} "
                "(or a kind registered with pyro_irm.channels.register_kind), got {self.kind!r}"
            )
        if self.kind == "ordinal":
            levels = 5 if self.levels is None else self.levels
            if not isinstance(levels, int) or levels < 2:
                raise ValueError(f"channel {self.name!r}: an ordinal channel needs at least 2 levels")
            object.__setattr__(self, "levels", levels)
        elif self.levels is not None:
            raise ValueError(f"channel {self.name!r}: only an ordinal channel has levels")

    @property
    def sign(self) -> int:
        """+1 for a positive channel, -1 for a negative one."""
        return 1 if self.polarity == "positive" else -1

    @property
    def domain(self) -> ChannelKind:
        return CHANNEL_KINDS[self.kind]


# A log with one action column and nothing declared: the seed paper's single positive action.
DEFAULT_CHANNELS: tuple[ChannelSpec, ...] = (ChannelSpec("action"),)


def check_channels(channels: Sequence[ChannelSpec]) -> tuple[ChannelSpec, ...]:
    """Validate a channel list: at least one, unique names. No kind is required: ratings or
    counts alone identify the groups as well as a binary action does."""
    channels = tuple(channels)
    if not channels:
        raise ValueError("declare at least one action channel")
    names = [c.name for c in channels]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"action channels {duplicated} are declared more than once")
    return channels


def describe_channels(channels: Sequence[ChannelSpec]) -> str:
    """``copy (+), regenerated (-), dwell_seconds (+, continuous)``."""
    parts = []
    for c in channels:
        marks = ["+" if c.sign > 0 else "-"] + ([c.kind] if c.kind != "binary" else [])
        parts.append(f"{c.name} ({', '.join(marks)})")
    return ", ".join(parts)
