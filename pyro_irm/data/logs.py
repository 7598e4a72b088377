"""Implicit-feedback logs with text: the declared schema, validation with row-level errors, writing.

A log has one row per shown response: ``prompt``, ``response``, one or more action columns (0/1, or
counts and durations turned into 0/1 by a threshold), an optional explicit ``label`` and optional
numeric context columns (position, length, ...). Column names are mappable through
:class:`LogSchema`. Rows simulated by :func:`pyro_irm.data.simulate_log` also carry their truth in
the ``TRUTH_COLUMNS``, which :meth:`FeedbackLog.to_feedback` turns back into ``GroundTruth``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from pyro_irm.atomic import atomic_file, strict_json
from pyro_irm.channels import ChannelSpec
from pyro_irm.data.conversation import (
    ConversationError,
    render_prompt,
    response_text,
    split_conversation,
)
from pyro_irm.data.feedback import FeedbackData, make_truth
from pyro_irm.data.readers import (
    CSV_SUFFIXES,
    JSON_SUFFIXES,
    PARQUET_SUFFIXES,
    ParseError,
    data_suffix,
    iter_records,
    source_name,
)
from pyro_irm.data.schema import LogFormatError, LogSchema

# Columns a simulated log carries besides the schema's: they make the simulated truth reloadable.
TRUTH_COLUMNS = ("true_preference", "true_engagement", "true_propensity_probability", "score")

OnError = Literal["raise", "skip"]


@dataclass(frozen=True)
class DroppedRow:
    row: int
    field: str
    reason: str


@dataclass(frozen=True)
class LoadReport:
    """What reading a log kept and dropped."""

    source: str
    rows_read: int
    dropped: tuple[DroppedRow, ...] = ()
    missing: tuple[tuple[str, int], ...] = ()  # (channel, empty cells) of kept rows, marginalized
    zero_filled: tuple[tuple[str, int], ...] = ()  # (column, empty cells read as 0) of kept rows
    left_out: tuple[tuple[str, int], ...] = ()  # (column, rows left out for an empty cell there)
    notes: tuple[str, ...] = ()  # what the log's format adds (trees read, messages left out)

    @property
    def rows_kept(self) -> int:
        return self.rows_read - len(self.dropped) - sum(count for _, count in self.left_out)

    def summary(self) -> str:
        text = f"{self.source}: read {self.rows_read} rows, kept {self.rows_kept}"
        if self.notes:
            text += " (" + "; ".join(self.notes) + ")"
        for counts, what in (
            (self.missing, "empty action cells, left out of their rows' likelihood"),
            (self.zero_filled, "empty action cells read as 0 (--missing COL=zero)"),
            (self.left_out, "rows left out for an empty action cell (--missing COL=drop-row)"),
        ):
            if counts:
                text += f"; {what}: " + ", ".join(f"{name} {count}" for name, count in counts)
        if not self.dropped:
            return text
        reasons = Counter(f"{d.field}: {d.reason}" for d in self.dropped)
        listed = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(5))
        first = ", ".join(str(d.row) for d in self.dropped[:10])
        return f"{text}, dropped {len(self.dropped)} ({listed}); first dropped rows: {first}"


def user_key(value) -> str:
    """A user id as text, the same whichever format carried it: 7 in JSON, "7" in a CSV and 7.0 in
    a Parquet column widened to float by a missing cell are one user."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value.strip()
    return str(value)


@dataclass(frozen=True)
class FeedbackLog:
    """Rows of a log after validation.

    Attributes:
        prompts, responses: ``N`` texts each.
        actions: ``(N, K)`` float32, one column per action channel (0/1, or a number for a
            continuous channel).
        action_names: the ``K`` channel names.
        channels: the ``K`` channels' declarations (polarity, kind).
        user_ids: ``N`` user identifiers, or None.
        labels: ``(N,)`` float32 explicit preference in {0, 1}, NaN where a row has none; or None.
        context: ``(N, C)`` float32 context columns, or None.
        context_names: the ``C`` context names.
        prompt_ids: ``N`` prompt identifiers (rows of one prompt share one).
        observed: ``(N,)`` float32 observation indicator (observational logs), or None.
        propensity: ``(N,)`` float32 known P(feedback given), or None.
        truth: for simulated logs, ``{column: (N,) float32}`` for every one of ``TRUTH_COLUMNS``.
        source_rows: ``(N,)`` row numbers in the source (1-based), for messages.
        report: what reading kept and dropped.
        prompt_turns: where any row's prompt was a message list, each row's turns (None for a text
            prompt), so that a chat template renders the whole conversation; ``prompts`` holds their
            text (``data/conversation.py``'s rule).
        source_sha256: the sha256 of the file's bytes as they were read (a local file), else None.
        ranks: ``(N,)`` float32 rank among the responses to one prompt (0 or 1 = best, NaN where
            unranked; evaluation only), or None.
        clusters: ``N`` ids of the units evaluation resamples (conversation trees), or None (prompts).
        schema: the column mapping the log was read with, its format decided.
    """

    prompts: list[str]
    responses: list[str]
    actions: np.ndarray
    action_names: tuple[str, ...]
    labels: np.ndarray | None
    context: np.ndarray | None
    context_names: tuple[str, ...]
    prompt_ids: list[str]
    truth: dict[str, np.ndarray] | None
    source_rows: np.ndarray
    report: LoadReport
    observed: np.ndarray | None = None
    propensity: np.ndarray | None = None
    channels: tuple[ChannelSpec, ...] | None = None
    user_ids: list[str] | None = None
    prompt_turns: list[list[dict] | None] | None = None
    source_sha256: str | None = None
    ranks: np.ndarray | None = None
    clusters: list[str] | None = None
    schema: LogSchema | None = None

    def __len__(self) -> int:
        return len(self.responses)

    @property
    def encoder_prompts(self) -> list:
        """Each row's prompt as an encoder reads it: its message list where it had one, else its text."""
        if self.prompt_turns is None:
            return self.prompts
        return [
            text if turns is None else turns
            for text, turns in zip(self.prompts, self.prompt_turns, strict=True)
        ]

    @property
    def action(self) -> np.ndarray:
        """``(N,)`` float32: 1 where any positive binary channel fired or positive count is above 0
        (what single-action methods see)."""
        if self.actions.shape[1] == 0:
            raise ValueError(f"{self.report.source} was read without action columns")
        channels = self.channels or tuple(ChannelSpec(n) for n in self.action_names)
        positive = [k for k, c in enumerate(channels) if c.kind in ("binary", "count") and c.sign > 0]
        if not positive:
            raise ValueError(f"{self.report.source}: no positive binary or count action column was declared")
        return (np.nan_to_num(self.actions[:, positive], nan=0.0) > 0).max(axis=1).astype(np.float32)

    def user_vocabulary(self) -> list[str]:
        """The distinct user ids, sorted: a user's index is its position here."""
        return sorted(set(self.user_ids)) if self.user_ids is not None else []

    def user_indices(self, vocabulary: list[str] | None = None) -> np.ndarray | None:
        """``(N,)`` int64 index of each row's user in ``vocabulary`` (default: this log's), -1 for a
        user it does not hold (unseen users get the prior mean)."""
        if self.user_ids is None:
            return None
        lookup = {u: i for i, u in enumerate(self.user_vocabulary() if vocabulary is None else vocabulary)}
        return np.asarray([lookup.get(u, -1) for u in self.user_ids], dtype=np.int64)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None and bool(np.isfinite(self.labels).any())

    def context_scaling(self) -> tuple[list[float], list[float]]:
        """Per-column ``(mean, standard deviation)`` of the context (a constant column gets 1)."""
        if self.context is None:
            return [], []
        scale = self.context.std(axis=0)
        return self.context.mean(axis=0).tolist(), np.where(scale > 0, scale, 1.0).tolist()

    def to_feedback(
        self,
        embeddings: np.ndarray | torch.Tensor,
        user_vocabulary: list[str] | None = None,
        context_scaling: tuple[list[float], list[float]] | None = None,
    ) -> FeedbackData:
        """The model's view of this log: embeddings ``(N, D)``, every action channel, context
        standardized per column with ``context_scaling`` (default: this log's own; it only enters
        the propensity and emission networks), user indices in ``user_vocabulary`` (default: this
        log's users), labels and truth."""
        if embeddings.shape[0] != len(self):
            raise ValueError(
                f"embeddings have {embeddings.shape[0]} rows but the log has {len(self)}; "
                "embed this log (with the same column mapping) to get matching rows"
            )
        context = None
        if self.context is not None:
            mean, scale = context_scaling or self.context_scaling()
            context = ((self.context - np.asarray(mean)) / np.asarray(scale)).astype(np.float32)
        truth = None
        if self.truth is not None:
            t = {name: torch.from_numpy(values) for name, values in self.truth.items()}
            truth = make_truth(
                t["true_preference"],
                t["true_engagement"],
                t["true_preference"],
                t["true_propensity_probability"],
                t["score"],
            )
        labels = None if self.labels is None else torch.from_numpy(self.labels)
        _, prompt_codes = np.unique(np.asarray(self.prompt_ids), return_inverse=True)
        return FeedbackData(
            embeddings=embeddings,
            actions=self.actions,
            channels=self.channels or tuple(ChannelSpec(n) for n in self.action_names),
            users=self.user_indices(user_vocabulary),
            context=context,
            context_names=None if context is None else self.context_names,
            truth=truth,
            labels=labels,
            observed=self.observed,
            propensity=self.propensity,
            prompt_ids=prompt_codes.astype(np.int64),
        )

    def subset(self, index: np.ndarray) -> FeedbackLog:
        """The rows at ``index``."""
        index = np.asarray(index)
        pick = lambda values: None if values is None else values[index]  # noqa: E731
        return FeedbackLog(
            prompts=[self.prompts[i] for i in index],
            responses=[self.responses[i] for i in index],
            actions=self.actions[index],
            action_names=self.action_names,
            labels=pick(self.labels),
            context=pick(self.context),
            context_names=self.context_names,
            prompt_ids=[self.prompt_ids[i] for i in index],
            truth=None if self.truth is None else {k: v[index] for k, v in self.truth.items()},
            source_rows=self.source_rows[index],
            report=self.report,
            observed=pick(self.observed),
            propensity=pick(self.propensity),
            channels=self.channels,
            user_ids=None if self.user_ids is None else [self.user_ids[i] for i in index],
            prompt_turns=None if self.prompt_turns is None else [self.prompt_turns[i] for i in index],
            ranks=pick(self.ranks),
            clusters=None if self.clusters is None else [self.clusters[i] for i in index],
            schema=self.schema,
        )


def prompt_hash(prompt: str) -> str:
    """A short stable identifier of a prompt's text."""
    return hashlib.blake2b(prompt.encode("utf-8"), digest_size=8).hexdigest()


class RowProblem(Exception):
    """A row that does not fit: the field and why (raised by a row's parser, handled by the reader)."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


_FIX_LOG_ROW = (
    "Fix the row, map the columns with the schema (LogSchema(prompt=..., actions=..., action_values=..., "
    "missing=...)), or skip bad rows (read_log(..., on_error='skip'))"
)


def drop_or_raise(
    problem: RowProblem, name: str, row: int, on_error: OnError, dropped: list[DroppedRow], fix: str
) -> None:
    """Stop at a bad row naming source, row and field (``on_error="raise"``), or record its drop."""
    if on_error == "raise":
        raise LogFormatError(
            f"{name}, row {row}, field {problem.field!r}: {problem.reason}", fix, "row"
        ) from None
    dropped.append(DroppedRow(row, problem.field, problem.reason))


def checked_report(
    name: str, rows_read: int, dropped: list[DroppedRow], max_bad_fraction: float | None, fix: str
) -> LoadReport:
    """What a read kept and dropped; refuses a read that dropped more than ``max_bad_fraction``."""
    report = LoadReport(name, rows_read, tuple(dropped))
    if max_bad_fraction is not None and rows_read and len(dropped) > max_bad_fraction * rows_read:
        raise LogFormatError(
            f"{name}: {len(dropped)} of {rows_read} rows ({len(dropped) / rows_read:.1%}) do not fit the "
            f"schema, more than the {max_bad_fraction:.1%} allowed ({report.summary()})",
            fix,
            "share",
        )
    return report


def _number(record: dict, name: str, required: bool, words: Words | None = None) -> float | None:
    """A cell as a number; None for an empty one (a row problem where ``required``). With
    ``words`` (a 0/1 column), the schema's yes/no words are read as 1 and 0."""
    if name not in record or record[name] is None:
        if required:
            raise RowProblem(name, "is missing")
        return None
    value = record[name]
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if words is not None and text in words.true:
            return 1.0
        if words is not None and text in words.false:
            return 0.0
        if text in ("", "nan", "null", "none"):
            if required:
                raise RowProblem(name, "is empty")
            return None
        try:
            value = float(text)
        except ValueError:
            raise RowProblem(name, _not_a_number(value, words)) from None
    if not isinstance(value, int | float):
        raise RowProblem(name, _not_a_number(value, words))
    try:
        value = float(value)
    except OverflowError:
        raise RowProblem(name, f"{_shorten(str(value))} is out of range for a number") from None
    if math.isnan(value):
        if required:
            raise RowProblem(name, "is NaN")
        return None
    if not math.isfinite(value):
        raise RowProblem(name, f"{value} is not finite")
    return value


@dataclass(frozen=True)
class Words:
    """The texts a 0/1 column reads as 1 and as 0 (lower case)."""

    true: frozenset[str]
    false: frozenset[str]

    @classmethod
    def of(cls, schema: LogSchema) -> Words:
        return cls(
            frozenset(w.strip().lower() for w in schema.true_values),
            frozenset(w.strip().lower() for w in schema.false_values),
        )


def _not_a_number(value, words: Words | None) -> str:
    shown = _shorten(repr(value))
    if words is None:
        return f"{shown} is not a number"
    return (
        f"{shown} is not 0/1, a number or a yes/no word (read as 1: {', '.join(sorted(words.true))}; as 0: "
        f"{', '.join(sorted(words.false))}); --true-values/--false-values add words, and --action-values "
        "maps a column of categories (e.g. thumbs=up:positive,down:negative)"
    )


def _shorten(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was: a 400-digit value stays readable."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class _DropRow(Exception):
    """A row left out because an action column's missing-value policy says so (not a bad row)."""

    def __init__(self, column: str):
        super().__init__(column)
        self.column = column


def _row_actions(
    record: dict, schema: LogSchema, thresholds: dict[str, float], words: Words
) -> tuple[list[float], list[str]]:
    """A row's value of every channel, in channel order, and the columns whose empty cell was read
    as 0; an empty cell as its column's missing policy says (NaN: marginalized). A value outside
    its channel's domain is a row problem."""
    values, zeroed = [], []
    for spec in schema.channels[: len(schema.action_columns)]:
        policy = schema.missing_policy(spec.name)
        binary = spec.kind == "binary"
        value = _number(record, spec.name, policy == "refuse", words if binary else None)
        if value is None:
            if policy == "drop-row":
                raise _DropRow(spec.name)
            values.append(0.0 if policy == "zero" else float("nan"))
            if policy == "zero":
                zeroed.append(spec.name)
            continue
        if binary:
            value = _binary(spec.name, value, thresholds.get(spec.name), "counts or durations")
        elif (why := spec.domain.problem(value, spec)) is not None:
            raise RowProblem(spec.name, f"{value:g}: {why}")
        values.append(value)
    for column, roles in schema.value_maps.items():
        values.extend(_categorical(record, column, roles))
    return values, zeroed


def _categorical(record: dict, column: str, roles: dict[str, str]) -> list[float]:
    """One 0/1 per mapped value with a channel (positive or negative): 1 for the cell's value; all
    0 for an empty cell or a value mapped to 'none'."""
    value = record.get(column)
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    text = text.strip().lower()
    if text in ("", "nan", "null", "none") and text not in roles:
        chosen = None
    elif text in roles:
        chosen = text
    else:
        accepted = ", ".join(f"{v} ({r})" for v, r in roles.items())
        raise RowProblem(
            column,
            f"{_shorten(repr(value))} is not a value --action-values maps for {column!r} (it maps "
            f"{accepted}; an empty cell is neither); add it, e.g. {column}=...,{text or 'VALUE'}:none",
        )
    return [float(v == chosen) for v, role in roles.items() if role != "none"]


def _binary(name: str, value: float, threshold: float | None, what: str) -> float:
    if threshold is not None:
        return float(value > threshold)
    if value not in (0.0, 1.0):
        raise RowProblem(name, f"{value:g} is not 0 or 1 (give a threshold for {what} that are not 0/1)")
    return value


def _text(record: dict, name: str) -> str:
    value = record.get(name)
    if value is None:
        raise RowProblem(name, "is missing")
    if not isinstance(value, str):
        raise RowProblem(name, f"is a {type(value).__name__}, not text")
    return value


def _row_texts(record: dict, schema: LogSchema) -> tuple[str, str, list[dict] | None]:
    """A row's (prompt, response, prompt turns): text columns, or TRL's forms (``completion`` for the
    response, messages in either column, or a ``messages`` conversation alone; see
    ``data/conversation.py``). The turns are the prompt's messages where it had them, else None."""
    try:
        if schema.prompt not in record and schema.response not in record and "messages" in record:
            prompt, response = split_conversation(record["messages"])
            return prompt, response, [dict(m) for m in record["messages"][:-1]]
        response_column = schema.response
        if response_column == "response" and "response" not in record and "completion" in record:
            response_column = "completion"  # TRL's unpaired and prompt-completion formats
        prompt, response = record.get(schema.prompt), record.get(response_column)
        turns = None
        if isinstance(prompt, list):
            rendered = render_prompt(prompt, schema.prompt)  # checks the messages first
            turns, prompt = [dict(m) for m in prompt], rendered
        if isinstance(response, list):
            response = response_text(response, response_column)
    except ConversationError as error:
        field, _, reason = str(error).partition(": ")
        raise RowProblem(field, reason) from None
    return (
        _text({schema.prompt: prompt}, schema.prompt),
        _text({response_column: response}, response_column),
        turns,
    )


def read_log(
    source: str | Path | Any,
    schema: LogSchema | None = None,
    on_error: OnError = "raise",
    split: str | None = None,
    max_bad_fraction: float | None = None,
) -> FeedbackLog:
    """Read and validate a log (JSONL, CSV/TSV, Parquet, a saved or hub ``datasets`` data set).

    Args:
        source: a file, a ``save_to_disk`` directory, a hub name (``owner/name`` or ``hf://...``),
            or rows in memory: a pandas ``DataFrame``, a ``datasets.Dataset`` or a list of dicts.
        schema: the column mapping (defaults: prompt, response, action, label).
        on_error: ``"raise"`` stops at the first bad row with a :class:`LogFormatError` naming the
            file, row and field; ``"skip"`` drops bad rows and records why in ``log.report``.
        split: the split of a ``datasets`` source.
        max_bad_fraction: with ``on_error="skip"``, stop with a :class:`LogFormatError` when more
            than this share of the rows would be dropped (a wrong column mapping, not a few bad
            rows); None for no limit.
    """
    schema = schema or LogSchema()
    name = source_name(source)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    digest_before = _file_sha256(source)
    schema, records, trees = _records_of_format(source, split, schema)
    parser = _RowParser(schema)
    columns = _Columns()
    dropped: list[DroppedRow] = []
    left_out: Counter[str] = Counter()  # rows left out by a drop-row policy, by column
    zero_filled: Counter[str] = Counter()  # empty cells read as 0 by a zero policy, by column
    rows_read = 0
    first_columns: set[str] = set()
    for row, record in records:
        rows_read += 1
        if not first_columns and isinstance(record, dict):
            first_columns = set(record)
        try:
            parsed, zeroed = parser.parse(record)
        except RowProblem as problem:
            if first_columns and problem.field not in first_columns and problem.reason == "is missing":
                # Not a bad row but a column the log does not have (a misspelt mapping, say).
                hint = ""
                if {"message_id", "role"} <= first_columns:
                    hint = "; it is an OpenAssistant export: read it with log_format='oasst' (--log-format)"
                problem = RowProblem(
                    problem.field,
                    f"is missing: the log has no such column (its columns: {sorted(first_columns)}){hint}",
                )
            drop_or_raise(problem, name, row, on_error, dropped, _FIX_LOG_ROW)
            continue
        except _DropRow as drop:
            left_out[drop.column] += 1
            continue
        zero_filled.update(zeroed)
        columns.append(parsed, row)
    report = checked_report(
        name,
        rows_read,
        dropped,
        max_bad_fraction,
        "Check the column mapping (a graded label needs LogSchema(label_threshold=...), counts need "
        "action_thresholds, categories action_values) or raise max_bad_fraction",
    )
    if not columns.responses:
        raise LogFormatError(f"{name}: no usable rows ({report.summary()})")
    action_table = columns.action_table(schema, name, first_columns)
    warn_of_outliers(name, action_table, schema.channels, columns.source_rows)
    empty = np.isnan(action_table).sum(axis=0)
    report = replace(
        report,
        missing=tuple((c.name, int(n)) for c, n in zip(schema.channels, empty, strict=True) if n),
        zero_filled=tuple(zero_filled.items()),
        left_out=tuple(left_out.items()),
        notes=trees.notes() if trees is not None else (),
    )
    return columns.log(
        schema, action_table, parser.truth_present, report, _unchanged_while_read(source, digest_before)
    )


def _records_of_format(source, split, schema: LogSchema):
    """``(schema, records, tree counts)``: the records as rows of the log's format (an OpenAssistant
    export becomes one row per assistant reply, ``data/oasst.py``), the schema with that format's
    defaults where the user set nothing, and what reading trees counted (None for a table)."""
    from itertools import chain

    from pyro_irm.data.oasst import TreeCounts, looks_like_oasst, oasst_rows, oasst_schema

    records = iter_records(source, split)
    if schema.log_format == "table":
        return schema, records, None
    first = next(records, None)
    records = chain([first] if first is not None else [], records)
    record = first[1] if first is not None else None
    if schema.log_format == "oasst" or looks_like_oasst(record):
        counts = TreeCounts()
        dated = isinstance(record, dict) and record.get("created_date") is not None
        return oasst_schema(schema, dated), oasst_rows(records, counts), counts
    return replace(schema, log_format="table"), records, None


def warn_of_outliers(name: str, actions: np.ndarray, channels, source_rows: list[int]) -> None:
    """Warn, naming the row and column, of count and continuous values far beyond the rest: more
    than 10 robust standard deviations of ``log1p`` above the median (one count of 1e30 among
    tallies of 0 to 5 would decide a fit by itself)."""
    import warnings

    for k, spec in enumerate(channels):
        if spec.kind not in ("count", "continuous"):
            continue
        values = actions[:, k].astype(np.float64)
        present = np.isfinite(values)
        if present.sum() < 10:
            continue
        logged = np.log1p(np.clip(values[present], 0, None))
        centre = np.median(logged)
        spread = 1.4826 * np.median(np.abs(logged - centre))
        limit = centre + 10 * max(spread, 0.5)
        far = np.flatnonzero(present)[logged > limit]
        if far.size:
            first = far[np.argmax(values[far])]
            warnings.warn(
                f"{name}: {far.size} value(s) of {spec.kind} column {spec.name!r} lie far beyond the rest, "
                f"the largest {values[first]:g} at row {source_rows[first]} (median "
                f"{np.expm1(centre):g}); check them, or leave such rows out: one extreme value can "
                "decide a fit",
                stacklevel=3,
            )


class _Row(NamedTuple):
    """One row of a log as read (before the columns are stacked)."""

    prompt: str
    turns: list[dict] | None
    response: str
    actions: list[float]
    label: float
    context: list[float]
    prompt_id: str
    observed: float
    propensity: float
    truth: list[float]
    user_id: str | None
    rank: float
    cluster: str | None


class _RowParser:
    """Reads one record by the schema (:meth:`parse`), raising :class:`RowProblem` naming the field."""

    def __init__(self, schema: LogSchema):
        self.schema, self.thresholds, self.words = schema, schema.thresholds, Words.of(schema)
        self.truth_present: bool | None = None  # whether the log carries simulated truth (its first row says)

    def parse(self, record) -> tuple[_Row, Counter]:
        """``(row, {column: 1 where an empty cell was read as 0})``."""
        schema, words = self.schema, self.words
        if isinstance(record, ParseError):
            raise RowProblem(record.field, record.reason)
        prompt, response, turns = _row_texts(record, schema)
        row_actions, zeroed = _row_actions(record, schema, self.thresholds, words)
        label = float("nan")
        if schema.label is not None:
            value = _number(record, schema.label, False, words)
            if value is not None:
                label = _binary(schema.label, value, schema.label_threshold, "graded labels")
        row_context = [_number(record, name, True) for name in schema.context]
        row_observed, row_propensity = self._observation(record, row_actions)
        has_truth = all(record.get(name) is not None for name in TRUTH_COLUMNS)
        if self.truth_present is None:
            self.truth_present = has_truth
        row_truth = [_number(record, name, True) for name in TRUTH_COLUMNS] if self.truth_present else []
        if schema.prompt_id is not None:
            prompt_id = record.get(schema.prompt_id)
            if prompt_id is None:
                raise RowProblem(schema.prompt_id, "is missing")
            prompt_id = str(prompt_id)
        else:
            prompt_id = prompt_hash(prompt)
        rank = float("nan")
        if schema.rank is not None:
            value = _number(record, schema.rank, False)
            rank = float("nan") if value is None else value
        cluster = None
        if schema.cluster is not None:
            value = record.get(schema.cluster)
            cluster = prompt_id if value is None else str(value)
        row = _Row(prompt, turns, response, row_actions, label, row_context, prompt_id, row_observed,
                   row_propensity, row_truth, self._user(record), rank, cluster)  # fmt: skip
        return row, zeroed

    def _user(self, record) -> str | None:
        schema = self.schema
        if schema.user is None:
            return None
        user_id = record.get(schema.user)
        if user_id is None or (isinstance(user_id, str) and not user_id.strip()):
            raise RowProblem(schema.user, "is missing")
        if isinstance(user_id, float) and math.isnan(user_id):
            raise RowProblem(schema.user, "is missing")
        return user_key(user_id)

    def _observation(self, record, row_actions: list[float]) -> tuple[float, float]:
        """``(observed, propensity)`` of an observational log's row (NaN where not declared)."""
        schema = self.schema
        row_observed = row_propensity = float("nan")
        if schema.observed is not None:
            row_observed = _binary(
                schema.observed, _number(record, schema.observed, True, self.words), None, "observation"
            )
            if row_observed == 0.0 and max(row_actions[: len(schema.actions)], default=0.0) == 1.0:
                raise RowProblem(
                    schema.actions[row_actions.index(1.0)],
                    f"is 1 but {schema.observed!r} is 0; a row without feedback has no value",
                )
        if schema.propensity is not None:
            row_propensity = _number(record, schema.propensity, True)
            if not 0.0 < row_propensity <= 1.0:
                raise RowProblem(schema.propensity, f"{row_propensity:g} is not in (0, 1]")
        return row_observed, row_propensity


class _Columns:
    """The rows kept, column by column, and the log they make."""

    def __init__(self):
        self.rows: list[_Row] = []
        self.source_rows: list[int] = []

    @property
    def responses(self) -> list[str]:
        return [row.response for row in self.rows]

    def append(self, row: _Row, source_row: int) -> None:
        self.rows.append(row)
        self.source_rows.append(source_row)

    def action_table(self, schema: LogSchema, name: str, first_columns: set[str]) -> np.ndarray:
        """``(N, K)`` float32 actions; a channel empty in every row is a mapping error."""
        table = np.asarray([row.actions for row in self.rows], dtype=np.float32)
        table = table.reshape(len(self.rows), len(schema.channels))
        for spec, count in zip(schema.channels, np.isnan(table).sum(axis=0), strict=True):
            if count == len(self.rows):  # a wrong mapping, not missing cells
                raise LogFormatError(
                    f"{name}: action column {spec.name!r} is empty or absent in all {count} rows kept; the "
                    f"log's columns are {sorted(first_columns)}",
                    "Map the action columns (LogSchema(actions=..., action_values=...))",
                    "columns",
                )
        return table

    def log(self, schema: LogSchema, actions: np.ndarray, truth_present, report, digest) -> FeedbackLog:
        rows = self.rows
        labels = np.asarray([row.label for row in rows], dtype=np.float32)
        truth = None
        if truth_present:
            table = np.asarray([row.truth for row in rows], dtype=np.float32)
            truth = {name: np.ascontiguousarray(table[:, i]) for i, name in enumerate(TRUTH_COLUMNS)}
        turns = [row.turns for row in rows]
        return FeedbackLog(
            prompts=[row.prompt for row in rows],
            responses=self.responses,
            actions=actions,
            action_names=tuple(spec.name for spec in schema.channels),
            channels=schema.channels,
            user_ids=[row.user_id for row in rows] if schema.user is not None else None,
            labels=labels if np.isfinite(labels).any() else None,
            context=np.asarray([row.context for row in rows], dtype=np.float32) if schema.context else None,
            context_names=schema.context,
            prompt_ids=[row.prompt_id for row in rows],
            truth=truth,
            source_rows=np.asarray(self.source_rows, dtype=np.int64),
            report=report,
            observed=np.asarray([row.observed for row in rows], np.float32) if schema.observed else None,
            propensity=np.asarray([row.propensity for row in rows], np.float32)
            if schema.propensity
            else None,
            prompt_turns=turns if any(t is not None for t in turns) else None,
            source_sha256=digest,
            ranks=_present(np.asarray([row.rank for row in rows], dtype=np.float32)),
            clusters=[row.cluster for row in rows] if schema.cluster is not None else None,
            schema=schema,
        )


def _present(values: np.ndarray) -> np.ndarray | None:
    return values if np.isfinite(values).any() else None


def _file_sha256(source) -> str | None:
    """The sha256 of a local file's bytes, or None for anything else."""
    if not isinstance(source, str | os.PathLike) or not Path(source).is_file():
        return None
    digest = hashlib.sha256()
    with open(source, "rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _unchanged_while_read(source, before: str | None) -> str | None:
    """``before``, the digest of what was read, once the file is seen unchanged since.

    Raises:
        LogFormatError: the file changed while it was read (another process appending to it).
    """
    if before is not None and _file_sha256(source) != before:
        raise LogFormatError(
            f"{source_name(source)} changed while it was read (another process wrote to it)",
            "Read a copy that nothing writes to, or read it again once the writer is done",
            "source",
        )
    return before


def write_records(path: str | Path, records: Sequence[dict[str, Any]] | Iterable[dict[str, Any]]) -> Path:
    """Write records to JSONL, CSV/TSV (``.gz`` allowed) or Parquet, chosen by ``path``'s suffix.

    The file appears complete or not at all: it is written under a temporary name beside ``path``
    and renamed over it only when every record is written (a killed or failed write leaves no
    partial ``path``).
    """
    path = Path(path)
    suffix = data_suffix(path)
    if suffix not in (*JSON_SUFFIXES, *CSV_SUFFIXES, *PARQUET_SUFFIXES):
        raise ValueError(f"{path}: unknown output format {suffix!r}; use .jsonl, .csv, .tsv or .parquet")
    records = list(records)
    gz = path.suffix.lower() == ".gz"
    opener = (
        (lambda p: gzip.open(p, "wt", encoding="utf-8", newline=""))
        if gz
        else (lambda p: open(p, "w", encoding="utf-8", newline=""))
    )
    with atomic_file(path) as temporary:
        if suffix in JSON_SUFFIXES:
            with opener(temporary) as out:
                for record in records:
                    out.write(strict_json(record, ensure_ascii=False) + "\n")
        elif suffix in CSV_SUFFIXES:
            columns = list(dict.fromkeys(key for record in records for key in record))
            with opener(temporary) as out:
                writer = csv.DictWriter(out, columns, delimiter="\t" if suffix == ".tsv" else ",")
                writer.writeheader()
                writer.writerows(records)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(records), temporary)
    return path
