"""``pyro-irm report``: a Markdown report of a run with its figures."""

from __future__ import annotations

import argparse

from pyro_irm.cli.common import (
    EXIT_OK,
    add_cache_option,
    add_run_trust_option,
    load_run,
    refuse_overwriting_inputs,
    run_embeddings,
)
from pyro_irm.cli.schema import add_bad_row_options, read_log_from_args


def add_parser(commands: argparse._SubParsersAction, parents: list) -> None:
    parser = commands.add_parser(
        "report",
        parents=parents,
        help="write a Markdown report of a run: fit, rewards, labels, posterior groups",
        description="Write RUN_DIR/report/report.md with PNGs: the training curve, the fit's figures, "
        "rewards by action, metrics against explicit labels, and, on a simulated log, the posterior "
        "groups against the truth (accuracy, confusion, reliability diagram).",
    )
    parser.add_argument("run_dir", help="run directory written by `pyro-irm fit`")
    parser.add_argument(
        "--log",
        metavar="FILE",
        help="log to report on (default: the run's training log, where it was at fit time)",
    )
    parser.add_argument("--embeddings", metavar="FILE", help="precomputed embeddings of that log")
    parser.add_argument("--out", metavar="PATH", help="output directory (default: RUN_DIR/report)")
    add_bad_row_options(parser)
    add_cache_option(parser)
    add_run_trust_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pyro_irm.analysis.report import write_report
    from pyro_irm.runs import training_log

    refuse_overwriting_inputs(
        {"--out": args.out},
        {"run directory": args.run_dir, "--log": args.log, "--embeddings": args.embeddings},
        directories=True,
    )
    run = load_run(args, args.run_dir)
    source = args.log or training_log(run)
    log = read_log_from_args(args, source, run.schema, run=run)
    embeddings = run_embeddings(run, log, args)
    path = write_report(run, log, embeddings, args.out)
    print(f"Wrote {path}")
    return EXIT_OK
