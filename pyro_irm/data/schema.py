"""Which columns of a log mean what (:class:`LogSchema`). Each field's metadata carries its command-line
flag and help, so the options of every command that reads a log are generated from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pyro_irm.channels import ChannelSpec

MISSING_POLICIES = ("marginalize", "zero", "drop-row", "refuse")
VALUE_ROLES = ("positive", "negative", "none")
TRUE_WORDS = ("true", "t", "yes", "y", "on")
FALSE_WORDS = ("false", "f", "no", "n", "off")
LOG_FORMATS = ("auto", "table", "oasst")
LogFormat = Literal["auto", "table", "oasst"]


class LogFormatError(ValueError):
    """A log row that does not fit the schema; the message names the file, row and field.

    ``detail`` is what is wrong; ``fix`` what to do, in the Python API's terms, and ``kind`` which
    advice it is ('row': one bad row, 'share': too many dropped), so a command line can give the
    same advice in its own flags."""

    def __init__(self, detail: str, fix: str | None = None, kind: str | None = None):
        super().__init__(detail if fix is None else f"{detail}. {fix}")
        self.detail, self.fix, self.kind = detail, fix, kind


@dataclass(frozen=True)
class LogSchema:
    """Which columns of a log mean what. Each field's metadata gives its command-line ``flag`` and
    ``help``; ``part`` says which commands read it ('actions': those that fit or score groups,
    'labels': those that read explicit labels)."""

    log_format: LogFormat = field(
        default="auto",
        metadata={
            "flag": "--log-format",
            "choices": LOG_FORMATS,
            "metavar": "FORMAT",
            "help": "'table': one row per shown response; 'oasst': OpenAssistant message trees (one "
            "message or one tree per line), every assistant reply a row, with reactions, exposure "
            "and ranks mapped as docs/method.md ('Real logs') says; 'auto': oasst when the first "
            "record is an OpenAssistant message",
        },
    )
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
    declared_channels: tuple[str, ...] = field(
        default=(),
        metadata={
            "flag": "--channel",
            "part": "actions",
            "metavar": "COL:KIND[:positive|negative][:LEVELS]",
            "help": "an action column of any channel kind, built in or registered (--plugin, or an installed "
            "plugin's entry point), positive unless told, LEVELS for an ordinal one (copied:binary, "
            "regenerated:binary:negative, stars:ordinal:10, rater:annotation); repeatable",
        },
    )
    action_values: tuple[str, ...] = field(
        default=(),
        metadata={
            "flag": "--action-values",
            "part": "actions",
            "metavar": "COL=VALUE:ROLE,...",
            "help": "a categorical feedback column read as channels, ROLE positive, negative or none: "
            "thumbs=up:positive,down:negative makes the channels thumbs=up (+) and thumbs=down (-); an "
            "empty cell is neither; any other value is a bad row; repeatable",
        },
    )
    missing_actions: str = field(
        default="marginalize",
        metadata={
            "flag": "--missing-actions",
            "part": "actions",
            "metavar": "POLICY",
            "choices": MISSING_POLICIES,
            "help": "an empty action cell, for columns without their own --missing: 'marginalize' "
            "(that channel is left out of that row's likelihood, exactly), 'zero' (no action), "
            "'drop-row' (the row is left out) or 'refuse' (a bad row); counted either way",
        },
    )
    missing: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata={
            "flag": "--missing",
            "part": "actions",
            "metavar": "COL=POLICY",
            "help": "what an empty cell of action column COL means, as --missing-actions "
            "(e.g. dwell_seconds=marginalize, copied=zero); repeatable",
        },
    )
    true_values: tuple[str, ...] = field(
        default=TRUE_WORDS,
        metadata={
            "flag": "--true-values",
            "metavar": "WORD",
            "help": "cell texts read as 1 in 0/1 columns (actions, label, observed), any case; "
            "repeatable, replaces the default",
        },
    )
    false_values: tuple[str, ...] = field(
        default=FALSE_WORDS,
        metadata={
            "flag": "--false-values",
            "metavar": "WORD",
            "help": "cell texts read as 0 in 0/1 columns, any case; repeatable, replaces the default",
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
    rank: str | None = field(
        default=None,
        metadata={
            "flag": "--rank-col",
            "part": "labels",
            "help": "column ranking the responses to one prompt (0 or 1 = best; evaluation only): "
            "evaluate reports the share of sibling pairs the reward orders as the rankers did",
        },
    )
    cluster: str | None = field(
        default=None,
        metadata={
            "flag": "--cluster-col",
            "part": "labels",
            "help": "column of the unit evaluation intervals resample (a conversation tree, a "
            "session; default: the prompt)",
        },
    )
    context: tuple[str, ...] = field(
        default=(),
        metadata={
            "flag": "--context-col",
            # read with the actions: the reward never reads the context, so scoring does not need it
            "part": "actions",
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
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}")
        binary = set(self.actions) | set(self.negative_actions)
        unknown = {name for name, _ in self.action_thresholds} - binary
        if unknown:
            raise ValueError(
                f"action thresholds name {sorted(unknown)}, which are not binary action columns "
                "(--action-col or --negative-action-col)"
            )
        for item in self.ordinal_actions:
            _ordinal(item)
        for item in self.declared_channels:
            parse_channel(item)
        for item in self.action_values:
            parse_value_map(item)
        _check_words(self.true_values, "--true-values", 1.0)
        _check_words(self.false_values, "--false-values", 0.0)
        words = [w.strip().lower() for w in (*self.true_values, *self.false_values)]
        both = sorted({w for w in words if words.count(w) > 1})
        if both:
            raise ValueError(f"--true-values and --false-values both name {both}; a word means one of them")
        self._check_missing()
        names = list(self.source_columns)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"action columns {repeated} are declared more than once")
        self._check_roles(names)
        # A context column that is also the target lets the propensity network read the answer.
        targets = {name: "an action column" for name in names}
        explained = [(self.label, "the label column"), (self.observed, "the observed column"),
                     (self.propensity, "the propensity column"), (self.rank, "the rank column")]  # fmt: skip
        for name, what in explained:
            if name is not None:
                targets.setdefault(name, what)
        clashes = [f"{name!r} is {targets[name]}" for name in self.context if name in targets]
        if clashes:
            raise ValueError(
                f"context columns must be features, not what the model explains: {'; '.join(clashes)}; "
                "drop it from --context-col"
            )

    def _check_roles(self, action_columns: list[str]) -> None:
        """Refuse one column in two roles (an action that is also the user, the label, ...): it
        would be read twice, and the fit would explain a column by itself."""
        roles: dict[str, list[str]] = {}
        named = [(self.prompt, "--prompt-col"), (self.response, "--response-col"), (self.user, "--user-col"),
                 (self.label, "--label-col"), (self.observed, "--observed-col"),
                 (self.propensity, "--propensity-col"), (self.rank, "--rank-col")]  # fmt: skip
        for name, role in [*((a, "an action column") for a in action_columns), *named]:
            if name is not None:
                roles.setdefault(name, []).append(role)
        clashes = [f"{name!r} is {' and '.join(found)}" for name, found in roles.items() if len(found) > 1]
        if clashes:
            raise ValueError(f"one column in two roles: {'; '.join(clashes)}; give each role its own column")

    def _check_missing(self) -> None:
        policies = [("--missing-actions", self.missing_actions)]
        policies += [(f"--missing {column}", policy) for column, policy in self.missing]
        for flag, policy in policies:
            if policy not in MISSING_POLICIES:
                choices = ", ".join(MISSING_POLICIES)
                raise ValueError(f"{flag}: {policy!r} is not a policy; choose one of {choices}")
        kinds = {spec.name: spec.kind for spec in self.channels if spec.name in self.action_columns}
        for column, policy in self.missing:
            if column not in kinds:
                raise ValueError(
                    f"--missing {column}={policy}: {column!r} is not an action column "
                    f"({', '.join(self.action_columns) or 'none declared'})"
                )
            if policy == "zero" and kinds[column] == "ordinal":
                raise ValueError(f"--missing {column}=zero: a rating of 1 to LEVELS has no zero")

    def missing_policy(self, column: str) -> str:
        """What an empty cell of action column ``column`` means (:data:`MISSING_POLICIES`)."""
        return dict(self.missing).get(column, self.missing_actions)

    @property
    def value_maps(self) -> dict[str, dict[str, str]]:
        """``{column: {value: role}}`` of the categorical columns (``--action-values``)."""
        return dict(parse_value_map(item) for item in self.action_values)

    @property
    def source_columns(self) -> tuple[str, ...]:
        """Every column the actions are read from: :attr:`action_columns`, then each categorical one."""
        return (*self.action_columns, *self.value_maps)

    @property
    def action_columns(self) -> tuple[str, ...]:
        """Every action column read as one channel, in channel order: positive, negative,
        continuous, count, ordinal (the categorical columns' channels follow in :attr:`channels`)."""
        ordinal = tuple(_ordinal(item)[0] for item in self.ordinal_actions)
        return (
            *self.actions,
            *self.negative_actions,
            *self.continuous_actions,
            *self.count_actions,
            *ordinal,
            *(parse_channel(item).name for item in self.declared_channels),
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
            *(parse_channel(item) for item in self.declared_channels),
            *(
                ChannelSpec(f"{column}={value}", role)
                for column, roles in self.value_maps.items()
                for value, role in roles.items()
                if role != "none"
            ),
        )

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.action_thresholds)


def parse_value_map(item: str) -> tuple[str, dict[str, str]]:
    """``(column, {value: role})`` of a declaration ``COL=VALUE:ROLE,VALUE:ROLE``."""
    column, sep, pairs = item.partition("=")
    example = "thumbs=up:positive,down:negative"
    if not sep or not column.strip() or not pairs.strip():
        raise ValueError(f"--action-values {item!r}: expected COL=VALUE:ROLE,... (for example {example})")
    roles: dict[str, str] = {}
    for pair in pairs.split(","):
        value, sep, role = pair.rpartition(":")
        value, role = value.strip(), role.strip().lower()
        if not sep or not value:
            raise ValueError(f"--action-values {item!r}: {pair!r} is not VALUE:ROLE (for example {example})")
        if role not in VALUE_ROLES:
            raise ValueError(
                f"--action-values {item!r}: role {role!r} of {value!r} is not one of {', '.join(VALUE_ROLES)}"
            )
        if value.lower() in roles:
            raise ValueError(f"--action-values {item!r}: the value {value!r} is mapped twice")
        roles[value.lower()] = role
    if all(role == "none" for role in roles.values()):
        raise ValueError(f"--action-values {item!r}: no value is positive or negative, so it has no channel")
    return column.strip(), roles


def _check_words(words: tuple[str, ...], flag: str, meaning: float) -> None:
    """Refuse a yes/no word that would read a cell differently in different files: an empty word (an
    empty cell is missing, never a value), a marker of a missing cell, or a number other than its
    meaning (a JSONL number is read as the number, so a CSV's text must be too)."""
    for word in words:
        text = str(word).strip().lower()
        if text in ("", "nan", "null", "none"):
            raise ValueError(
                f"{flag} {word!r}: an empty cell (or {text or 'nothing'}) means a missing value, never a "
                "yes or a no; choose --missing COL=zero to read empty action cells as 0"
            )
        try:
            number = float(text)
        except ValueError:
            continue
        if number != meaning:
            raise ValueError(
                f"{flag} {word!r}: a number is read as that number in every file type (a JSONL 0 stays 0), "
                f"so it cannot mean {int(meaning)} here; map categories with --action-values instead"
            )


# More ratings than anyone logs; the ordinal channel holds a cutpoint per level.
MAX_LEVELS = 1000


def parse_channel(item: str) -> ChannelSpec:
    """The channel of a declaration ``COL:KIND[:positive|negative][:LEVELS]`` (``--channel``)."""
    from pyro_irm.channels import CHANNEL_KINDS

    column, _, rest = item.partition(":")
    parts = [part.strip() for part in rest.split(":")] if rest else []
    known = ", ".join(CHANNEL_KINDS)
    if not column.strip() or not parts or not parts[0]:
        raise ValueError(
            f"--channel {item!r}: expected COL:KIND[:positive|negative][:LEVELS], KIND one of {known}"
        )
    kind, polarity, levels = parts[0].lower(), "positive", None
    if kind not in CHANNEL_KINDS:
        raise ValueError(
            f"--channel {item!r}: kind {kind!r} is not one of {known} (a kind of your own is registered by "
            "a --plugin module with pyro_irm.channels.register_kind)"
        )
    for part in parts[1:]:
        if part.lower() in ("positive", "negative"):
            polarity = part.lower()
        elif part.isdigit() and kind == "ordinal":
            levels = _levels(item, part, "--channel")
        else:
            raise ValueError(
                f"--channel {item!r}: {part!r} is neither a polarity (positive, negative) nor, for an "
                "ordinal channel, a number of levels"
            )
    return ChannelSpec(column.strip(), polarity, kind, levels)


def _levels(item: str, text: str, flag: str) -> int:
    if not text.isdigit() or not 2 <= int(text) <= MAX_LEVELS:
        raise ValueError(f"{flag} {item!r}: LEVELS must be a whole number from 2 to {MAX_LEVELS}")
    return int(text)


def _ordinal(item: str) -> tuple[str, int]:
    """``(column, levels)`` of an ordinal declaration ``COL`` or ``COL:LEVELS``."""
    name, _, levels = item.partition(":")
    if not name:
        raise ValueError(f"--ordinal-action-col {item!r}: expected COL or COL:LEVELS")
    if not levels:
        return name, 5
    return name, _levels(item, levels, "--ordinal-action-col")
