"""Command-line options for a log's columns, generated from :class:`~pyro_irm.data.schema.LogSchema`
(its fields' flags and help), and for how a log is read."""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import fields

from pyro_irm.cli.options import bounded
from pyro_irm.data.schema import LogSchema

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
        kwargs: dict = {"dest": "schema_" + field.name, "help": help_text}
        if typing.get_origin(hints[field.name]) is tuple:
            kwargs.update(action="append", metavar=field.metadata.get("metavar"))
        elif field.name == "label_threshold":
            kwargs["type"] = float
        elif "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        group.add_argument(field.metadata["flag"], **kwargs)
    add_read_options(group)


def add_read_options(parser) -> None:
    parser.add_argument("--split", help="split of a Hugging Face data set (hub name or saved directory)")
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="drop rows that do not fit the schema and report them (default: stop)",
    )
    add_bad_fraction_option(parser)


def add_bad_fraction_option(parser) -> None:
    parser.add_argument(
        "--max-bad-fraction",
        type=bounded(float, 0, 1),
        default=0.01,
        help="with --skip-bad-rows, stop when more than this share of rows would be dropped (default: 0.01)",
    )


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


def schema_from_args(args: argparse.Namespace, actions: bool = True, labels: bool = True) -> LogSchema:
    """The :class:`LogSchema` the options describe; the parts a command does not read are empty."""
    parts = _read_parts(actions, labels)
    values = {}
    for field in fields(LogSchema):
        part = field.metadata.get("part")
        if part is not None and part not in parts:
            # A column the command does not read is none; a setting (a policy) keeps its default.
            values[field.name] = () if isinstance(field.default, tuple) else None
            if "choices" in field.metadata:
                values[field.name] = field.default
            continue
        value = getattr(args, "schema_" + field.name, None)
        if value is None:
            continue
        if field.name == "action_thresholds":
            value = _thresholds(value)
        values[field.name] = tuple(value) if isinstance(value, list) else value
    return LogSchema(**values)


def read_log_from_args(args: argparse.Namespace, source: str, schema: LogSchema):
    """Read a log as the command's options say. What was dropped is always reported, even with
    --quiet: dropped rows are never silent."""
    from pyro_irm.data.logs import read_log

    log = read_log(
        source,
        schema,
        on_error="skip" if args.skip_bad_rows else "raise",
        split=getattr(args, "split", None),
        max_bad_fraction=args.max_bad_fraction if args.skip_bad_rows else None,
    )
    if log.report.dropped or not getattr(args, "quiet", False):
        print(log.report.summary(), file=sys.stderr)
    return log
