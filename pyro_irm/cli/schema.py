"""Command-line options for a log's columns, generated from :class:`~pyro_irm.data.schema.LogSchema`
(its fields' flags and help), and for how a log is read."""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import fields

from pyro_irm.channels import CHANNEL_KINDS
from pyro_irm.cli.options import bounded
from pyro_irm.data.schema import LogFormatError, LogSchema

_PARTS = ("actions", "labels")


def _read_parts(actions: bool, labels: bool) -> set[str]:
    return {part for part, wanted in zip(_PARTS, (actions, labels), strict=True) if wanted}


def add_schema_options(parser: argparse.ArgumentParser, actions: bool = True, labels: bool = True) -> None:
    """One option per :class:`LogSchema` field the command reads; repeatable for tuple fields."""
    group = parser.add_argument_group("log columns")
    parts = _read_parts(actions, labels)
    hints = typing.get_type_hints(LogSchema)
    for field in fields(LogSchema):
        part = field.metadata.get("part")
        if part is not None and part not in parts:
            continue
        default = field.default
        shown = ", ".join(default) if isinstance(default, tuple) else default
        help_text = field.metadata["help"] + (f" (default: {shown})" if shown not in (None, "") else "")
        if field.name == "declared_channels":
            help_text += "; kinds here: " + "; ".join(
                f"{k.name}: {k.summary}" for k in CHANNEL_KINDS.values()
            )
        kwargs: dict = {"dest": "schema_" + field.name, "help": help_text}
        kwargs["metavar"] = field.metadata.get("metavar", "COLUMN")
        if typing.get_origin(hints[field.name]) is tuple:
            kwargs["action"] = "append"
        elif field.name == "label_threshold":
            kwargs.update(type=float, metavar="X")
        elif "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        group.add_argument(field.metadata["flag"], **kwargs)
    add_read_options(group)


def add_read_options(parser) -> None:
    parser.add_argument(
        "--split", metavar="NAME", help="split of a Hugging Face data set (hub name or saved directory)"
    )
    add_bad_row_options(parser)


def add_bad_row_options(parser) -> None:
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        default=None,
        help="drop rows that do not fit the schema and report them (default: stop; a run's own "
        "setting where the command reads a run)",
    )
    parser.add_argument(
        "--max-bad-fraction",
        type=bounded(float, 0, 1),
        metavar="RATE",
        help=f"with --skip-bad-rows, stop when more than this share of rows would be dropped "
        f"(default: {DEFAULT_MAX_BAD_FRACTION}, or the run's)",
    )


DEFAULT_MAX_BAD_FRACTION = 0.01


def read_settings(args: argparse.Namespace, run=None) -> dict:
    """``{"skip_bad_rows", "max_bad_fraction"}``: the flags given, else the run's, else the defaults."""
    stored = (run.info.get("read") or {}) if run is not None else {}
    skip = args.skip_bad_rows if args.skip_bad_rows is not None else stored.get("skip_bad_rows", False)
    limit = args.max_bad_fraction
    if limit is None:
        limit = stored.get("max_bad_fraction", DEFAULT_MAX_BAD_FRACTION)
    return {"skip_bad_rows": bool(skip), "max_bad_fraction": float(limit)}


def _policies(items: list[str]) -> tuple[tuple[str, str], ...]:
    policies = []
    for item in items:
        name, sep, policy = item.partition("=")
        if not sep or not name:
            raise ValueError(
                f"--missing {item!r}: expected COL=POLICY (for example dwell_seconds=marginalize)"
            )
        policies.append((name, policy.strip().lower()))
    return tuple(policies)


def _thresholds(items: list[str]) -> tuple[tuple[str, float], ...]:
    thresholds = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--action-threshold {item!r}: expected COL=VALUE")
        try:
            thresholds.append((name, float(value)))
        except ValueError:
            raise ValueError(f"--action-threshold {item!r}: expected COL=VALUE with a number VALUE") from None
    return tuple(thresholds)


def run_schema(args: argparse.Namespace, run, actions: bool = True, labels: bool = True) -> LogSchema:
    """The schema ``run`` was fit with, as this command reads it (the parts it does not read
    emptied), with each column flag given here overriding the run's, and a note saying so."""
    parts = _read_parts(actions, labels)
    given = _given_values(args, parts)
    values = {}
    for field in fields(LogSchema):
        part = field.metadata.get("part")
        stored = getattr(run.schema, field.name)
        if part is not None and part not in parts:
            values[field.name] = _unread(field)
        elif field.name in given:
            values[field.name] = given[field.name]
            if given[field.name] != stored:
                shown = ", ".join(map(str, stored)) if isinstance(stored, tuple) else stored
                print(
                    f"note: {field.metadata['flag']} overrides the column mapping {run.name} was fit "
                    f"with ({shown or 'none'})",
                    file=sys.stderr,
                )
        else:
            values[field.name] = stored
    return LogSchema(**values)


def _empty(field):
    return () if isinstance(field.default, tuple) else None


def schema_from_args(args: argparse.Namespace, actions: bool = True, labels: bool = True) -> LogSchema:
    """The :class:`LogSchema` the options describe; the parts a command does not read are empty."""
    parts = _read_parts(actions, labels)
    unread = {f.name: _unread(f) for f in fields(LogSchema) if f.metadata.get("part") not in (None, *parts)}
    return LogSchema(**unread, **_given_values(args, parts))


def _unread(field):
    """A column the command does not read is none; a setting (a policy) keeps its default."""
    if "choices" in field.metadata:
        return field.default
    return _empty(field)


def _given_values(args: argparse.Namespace, parts: set[str]) -> dict:
    """The schema fields of the parts read whose flags were given, parsed."""
    values = {}
    for field in fields(LogSchema):
        part = field.metadata.get("part")
        value = getattr(args, "schema_" + field.name, None)
        if (part is not None and part not in parts) or value is None:
            continue
        if field.name == "action_thresholds":
            value = _thresholds(value)
        elif field.name == "missing":
            value = _policies(value)
        values[field.name] = tuple(value) if isinstance(value, list) else value
    others = ("action_values", "declared_channels", "count_actions", "ordinal_actions", "continuous_actions")
    if any(values.get(name) for name in others) and "actions" not in values:
        values["actions"] = ()  # the declared channels are the channels; no 'action' column is implied
    return values


def cli_fix(args: argparse.Namespace, kind: str) -> str:
    """What to do about a log that does not fit, in the flags this command has."""
    mapping = ["--prompt-col", "--response-col"]
    if hasattr(args, "schema_actions"):
        mapping += ["--action-col", "--action-values", "--missing"]
    if hasattr(args, "schema_label"):
        mapping.append("--label-col")
    if kind == "columns":
        return "Map the action columns (--action-col, --action-values, ...)"
    if kind == "share":
        needs = []
        if hasattr(args, "schema_label_threshold"):
            needs.append("a graded label needs --label-threshold")
        if hasattr(args, "schema_actions"):
            needs += ["counts need --action-threshold", "categories --action-values"]
        shown = f" ({', '.join(needs)})" if needs else ""
        return f"Check the column mapping{shown} or raise --max-bad-fraction"
    return f"Fix the row, map the columns ({', '.join(mapping)}), or drop bad rows with --skip-bad-rows"


def read_log_from_args(args: argparse.Namespace, source: str, schema: LogSchema, run=None):
    """Read a log as the command's options say (for a command on a run, its bad-row settings
    unless given here). What was dropped is always reported, even with --quiet: dropped rows are
    never silent."""
    from pyro_irm.data.logs import read_log

    settings = read_settings(args, run)
    try:
        log = read_log(
            source,
            schema,
            on_error="skip" if settings["skip_bad_rows"] else "raise",
            split=getattr(args, "split", None),
            max_bad_fraction=settings["max_bad_fraction"] if settings["skip_bad_rows"] else None,
        )
    except LogFormatError as error:
        if error.kind is None:
            raise
        raise LogFormatError(error.detail, cli_fix(args, error.kind), error.kind) from None
    report = log.report
    if (
        report.dropped
        or report.missing
        or report.zero_filled
        or report.left_out
        or not getattr(args, "quiet", False)
    ):
        print(log.report.summary(), file=sys.stderr)
    return log
