"""``pyro-irm report``: a Markdown report of a run with its figures."""

from __future__ import annotations

import argparse

from pyro_irm.cli.common import EXIT_OK, add_cache_option, run_embeddings
from pyro_irm.cli.schema import add_bad_fraction_option, read_log_from_args


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
    parser.add_argument("--log", help="log to report on (default: the run's training log)")
    parser.add_argument("--embeddings", help="precomputed embeddings of that log")
    parser.add_argument("--out", help="output directory (default: RUN_DIR/report)")
    parser.add_argument("--skip-bad-rows", action="store_true", help="drop malformed rows (default: stop)")
    add_bad_fraction_option(parser)
    add_cache_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pyro_irm.analysis.report import write_report
    from pyro_irm.runs import Run

    run = Run.load(args.run_dir)
    source = args.log or run.info.get("log")
    if source is None:
        raise ValueError(f"{run.directory}/run.json names no log; give one with --log")
    log = read_log_from_args(args, source, run.schema)
    embeddings = run_embeddings(run, log, args)
    path = write_report(run, log, embeddings, args.out)
    print(f"Wrote {path}")
    return EXIT_OK
