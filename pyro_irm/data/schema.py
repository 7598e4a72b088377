"""Which columns of a log mean what (:class:`LogSchema`). Each field's metadata carries its command-line
flag and help, so the options of every command that reads a log are generated from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyro_irm.channels import ChannelSpec


class LogFormatError(ValueError):
    """A log row that does not fit the schema; the message names the file, row and field."""


@dataclass(frozen=True)
class LogSchema:
    """Which columns of a log mean what. Each field's metadata gives its command-line ``flag`` and
    ``help``; ``part`` says which commands read it ('actions': those that fit or score groups,
    'labels': those that read explicit labels)."""

    prompt: str = field(
        default="prompt", metadata={"flag": "--prompt-col", "help": "column holding the prompt text"}
    )
    response: str = field(
        default="response", metadata={"flag": "--response-col", "help": "column holding the response text"}
    )
    actions: tuple[str, ...] = field(
        default=("action",),
        metadata={
            "flag": "--action-col",
            "part": "actions",
            "help": "positive action column (copy, thumbs up), 0/1 or with --action-threshold; repeat it "
            "for several channels, each its own channel of the model",
        },
    )
    negative_actions: tuple[str, ...] = field(
        default=(),
        metadata={
            "flag": "--negative-action-col",
            "part": "actions",
            "help": "negative action column (regenerate, thumbs down): more likely when the response is "
            "not preferred; repeatable",
        },
    )
    continuous_actions: tuple[str, ...] = field(
        default=(),
        metadata={
            "flag": "--continuous-action-col",
            "part": "actions",
            "help": "continuous positive action column kept as a number (dwell seconds, a count); repeatable",
        },
    )
    count_actions: tuple[str, ...] = field(
        default=(),
        metadata={
            "flag": "--count-action-col",
            "part": "actions",
            "metavar": "COL",
            "help": "count action column, 0, 1, 2, ... (reaction tallies, +1s): a negative-binomial channel; "
            "repeatable",
        },
    )
    ordinal_actions: tuple[str, ...] = field(
        default=(),
        metadata={
            "flag": "--ordinal-action-col",
            "part": "actions",
            "metavar": "COL[:LEVELS]",
            "help": "rating column, 1 to LEVELS (default 5): an ordered-logistic channel; repeatable",
        },
    )
    missing_actions: str = field(
        default="refuse",
        metadata={
            "flag": "--missing-actions",
            "part": "actions",
            "choices": ("refuse", "marginalize"),
            "help": "an empty action cell: 'refuse' the row (a bad row), or 'marginalize': leave that "
            "channel out of that row's likelihood, exactly, and count it",
        },
    )
    action_thresholds: tuple[tuple[str, float], ...] = field(
        default=(),
        metadata={
            "flag": "--action-threshold",
            "part": "actions",
            "metavar": "COL=VALUE",
            "help": "count or duration column COL counts as acted when above VALUE (e.g. dwell_s=30); "
            "repeatable",
        },
    )
    user: str | None = field(
        default=None,
        metadata={
            "flag": "--user-col",
            "part": "actions",
            "help": "column identifying the user (categorical): a per-user engagement effect (the reward "
            "never sees it)",
        },
    )
    label: str | None = field(
        default="label",
        metadata={
            "flag": "--label-col",
            "part": "labels",
            "help": "explicit quality label column, if any (evaluation, the oracle, --fit-labels)",
        },
    )
    label_threshold: float | None = field(
        default=None,
        metadata={
            "flag": "--label-threshold",
            "part": "labels",
            "help": "a label above this is preferred (labels not 0/1, e.g. 1-10)",
        },
    )
    context: tuple[str, ...] = field(
        default=(),
        metadata={
            "flag": "--context-col",
            "help": "numeric context column (display position, ...) that drives propensity only; repeatable",
        },
    )
    prompt_id: str | None = field(
        default=None,
        metadata={
            "flag": "--prompt-id-col",
            "help": "column grouping rows by prompt (default: a hash of the prompt)",
        },
    )
    observed: str | None = field(
        default=None,
        metadata={
            "flag": "--observed-col",
            "part": "actions",
            "help": "0/1 column saying whether feedback was given (an observational log); the action "
            "column is then the feedback value",
        },
    )
    propensity: str | None = field(
        default=None,
        metadata={
            "flag": "--propensity-col",
            "part": "actions",
            "help": "column of known P(feedback given) per row, in (0, 1]",
        },
    )

    def __post_init__(self) -> None:
        binary = set(self.actions) | set(self.negative_actions)
        unknown = {name for name, _ in self.action_thresholds} - binary
        if unknown:
            raise ValueError(
                f"action thresholds name {sorted(unknown)}, which are not binary action columns "
                "(--action-col or --negative-action-col)"
            )
        if self.missing_actions not in ("refuse", "marginalize"):
            raise ValueError(
                f"missing_actions must be 'refuse' or 'marginalize', got {self.missing_actions!r}"
            )
        for item in self.ordinal_actions:
            _ordinal(item)
        names = list(self.action_columns)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"action columns {repeated} are declared more than once")
        # A context column that is also the target lets the propensity network read the answer.
        targets = {name: "an action column" for name in names}
        for name, what in ((self.label, "the label column"), (self.observed, "the observed column"),
                           (self.propensity, "the propensity column")):  # fmt: skip
            if name is not None:
                targets.setdefault(name, what)
        clashes = [f"{name!r} is {targets[name]}" for name in self.context if name in targets]
        if clashes:
            raise ValueError(
                f"context columns must be features, not what the model explains: {'; '.join(clashes)}; "
                "drop it from --context-col"
            )

    @property
    def action_columns(self) -> tuple[str, ...]:
        """Every action column, in channel order: positive, negative, continuous, count, ordinal."""
        ordinal = tuple(_ordinal(item)[0] for item in self.ordinal_actions)
        return (
            *self.actions,
            *self.negative_actions,
            *self.continuous_actions,
            *self.count_actions,
            *ordinal,
        )

    @property
    def channels(self) -> tuple[ChannelSpec, ...]:
        """The declared channels, in the order of :attr:`action_columns`."""
        return (
            *(ChannelSpec(name, "positive") for name in self.actions),
            *(ChannelSpec(name, "negative") for name in self.negative_actions),
            *(ChannelSpec(name, "positive", "continuous") for name in self.continuous_actions),
            *(ChannelSpec(name, "positive", "count") for name in self.count_actions),
            *(ChannelSpec(name, "positive", "ordinal", n) for name, n in map(_ordinal, self.ordinal_actions)),
        )

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.action_thresholds)


def _ordinal(item: str) -> tuple[str, int]:
    """``(column, levels)`` of an ordinal declaration ``COL`` or ``COL:LEVELS``."""
    name, _, levels = item.partition(":")
    if not name:
        raise ValueError(f"--ordinal-action-col {item!r}: expected COL or COL:LEVELS")
    if not levels:
        return name, 5
    if not levels.isdigit() or int(levels) < 2:
        raise ValueError(f"--ordinal-action-col {item!r}: LEVELS must be a whole number of at least 2")
    return name, int(levels)
