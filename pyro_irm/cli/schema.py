"""Command-line options for a log's columns (the :class:`~pyro_irm.data.LogSchema`), shared by
every command that reads a log."""

from __future__ import annotations

import argparse
import sys

from pyro_irm.data.logs import LogSchema, read_log


def add_schema_options(parser: argparse.ArgumentParser, actions: bool = True, labels: bool = True) -> None:
    group = parser.add_argument_group("log columns")
    group.add_argument("--prompt-col", default="prompt", help="column holding the prompt (default: prompt)")
    group.add_argument(
        "--response-col", default="response", help="column holding the response (default: response)"
    )
    if actions:
        group.add_argument(
            "--action-col",
            action="append",
            help="positive action column (copy, thumbs up), 0/1 or with --action-threshold; repeat "
            "for several channels, each its own channel of the model (default: action)",
        )
        group.add_argument(
            "--negative-action-col",
            action="append",
            default=[],
            help="negative action column (regenerate, thumbs down): more likely when the response "
            "is not preferred; repeatable",
        )
        group.add_argument(
            "--continuous-action-col",
            action="append",
            default=[],
            help="continuous positive action column kept as a number (dwell seconds); repeatable",
        )
        group.add_argument(
            "--user-col",
            help="column identifying the user: a per-user engagement effect (the reward never sees it)",
        )
        group.add_argument(
            "--action-threshold",
            action="append",
            default=[],
            metavar="COL=VALUE",
            help="count or duration column COL counts as acted when above VALUE (e.g. dwell_s=30)",
        )
        group.add_argument(
            "--context-col",
            action="append",
            default=[],
            help="numeric context column (position, ...); repeatable",
        )
        group.add_argument(
            "--observed-col",
            help="0/1 column saying whether feedback was given (an observational log); "
            "the action column is then the feedback value",
        )
        group.add_argument("--propensity-col", help="column of known P(feedback given) per row")
    if labels:
        group.add_argument(
            "--label-col", default="label", help="explicit label column, if any (default: label)"
        )
        group.add_argument(
            "--label-threshold",
            type=float,
            help="a label above this is preferred (labels not 0/1, e.g. 1-10)",
        )
    group.add_argument("--prompt-id-col", help="column grouping rows by prompt (default: hash of the prompt)")
    group.add_argument("--split", help="split of a Hugging Face data set (hub name or saved directory)")
    group.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="drop rows that do not fit the schema and report them (default: stop)",
    )
    add_bad_fraction_option(group)


def add_bad_fraction_option(parser) -> None:
    parser.add_argument(
        "--max-bad-fraction",
        type=float,
        default=0.01,
        help="with --skip-bad-rows, stop when more than this share of rows would be dropped (default: 0.01)",
    )


def read_log_from_args(args: argparse.Namespace, source: str, schema: LogSchema):
    """Read a log as the command's options say. What was dropped is always reported, even with
    --quiet: dropped rows are never silent."""
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


def schema_from_args(args: argparse.Namespace, actions: bool = True, labels: bool = True) -> LogSchema:
    thresholds = []
    for item in getattr(args, "action_threshold", []) or []:
        name, sep, value = item.partition("=")
        try:
            thresholds.append((name, float(value)))
        except ValueError:
            raise ValueError(f"--action-threshold {item!r}: expected COL=VALUE with a number VALUE") from None
        if not sep:
            raise ValueError(f"--action-threshold {item!r}: expected COL=VALUE")
    action_cols = tuple(args.action_col or ["action"]) if actions else ()
    return LogSchema(
        prompt=args.prompt_col,
        response=args.response_col,
        actions=action_cols,
        negative_actions=tuple(getattr(args, "negative_action_col", []) or []) if actions else (),
        continuous_actions=tuple(getattr(args, "continuous_action_col", []) or []) if actions else (),
        user=getattr(args, "user_col", None) if actions else None,
        action_thresholds=tuple(thresholds),
        label=args.label_col if labels else None,
        label_threshold=args.label_threshold if labels else None,
        context=tuple(getattr(args, "context_col", []) or []),
        prompt_id=args.prompt_id_col,
        observed=getattr(args, "observed_col", None),
        propensity=getattr(args, "propensity_col", None),
    )
