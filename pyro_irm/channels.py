"""Action channels: what each column of a log's actions means (docs/method.md, "The generative model").

A log can record several actions per shown response: copy, thumbs up, regenerate, dwell seconds.
Each is declared once, by name, with its **polarity** (positive: more likely when the response is
preferred; negative: more likely when it is not) and its **kind** (binary 0/1, or continuous such as
seconds). The data layer keeps one column per channel; the model turns each declaration into an
emission component (:mod:`pyro_irm.models.channel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Polarity = Literal["positive", "negative"]
ChannelKind = Literal["binary", "continuous"]


@dataclass(frozen=True)
class ChannelSpec:
    """One action channel: its column ``name``, ``polarity`` and ``kind``."""

    name: str
    polarity: Polarity = "positive"
    kind: ChannelKind = "binary"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a channel needs a name")
        if self.polarity not in ("positive", "negative"):
            raise ValueError(f"channel {self.name!r}: polarity must be 'positive' or 'negative'")
        if self.kind not in ("binary", "continuous"):
            raise ValueError(f"channel {self.name!r}: kind must be 'binary' or 'continuous'")

    @property
    def sign(self) -> int:
        """+1 for a positive channel, -1 for a negative one."""
        return 1 if self.polarity == "positive" else -1


# A log with one action column and nothing declared: the seed paper's single positive action.
DEFAULT_CHANNELS: tuple[ChannelSpec, ...] = (ChannelSpec("action"),)


def check_channels(channels: Sequence[ChannelSpec]) -> tuple[ChannelSpec, ...]:
    """Validate a channel list: at least one, unique names, at least one binary channel."""
    channels = tuple(channels)
    if not channels:
        raise ValueError("declare at least one action channel")
    names = [c.name for c in channels]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"action channels {duplicated} are declared more than once")
    if not any(c.kind == "binary" for c in channels):
        raise ValueError(
            "every channel is continuous; declare at least one binary action (copy, thumbs up, ...)"
        )
    return channels


def describe_channels(channels: Sequence[ChannelSpec]) -> str:
    """``copy (+), regenerated (-), dwell_seconds (+, continuous)``."""
    parts = []
    for c in channels:
        marks = ["+" if c.sign > 0 else "-"] + (["continuous"] if c.kind == "continuous" else [])
        parts.append(f"{c.name} ({', '.join(marks)})")
    return ", ".join(parts)
