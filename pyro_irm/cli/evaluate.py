"""``pyro-irm evaluate``: fitted runs against a log's explicit labels or chosen/rejected pairs."""

from __future__ import annotations

import argparse
import json
import sys

from pyro_irm.cli.common import (
    EXIT_OK,
    add_cache_option,
    add_run_trust_option,
    load_run,
    run_embeddings,
    write_json,
)
from pyro_irm.cli.options import bounded
from pyro_irm.cli.schema import (
    add_schema_options,
    read_log_from_args,
    read_settings,
    run_schema,
    schema_from_args,
)

ROW_COLUMNS = (
    ("auc", "AUC"),
    ("mae", "MAE"),
    ("rmse", "RMSE"),
    ("r2", "R^2"),
    ("log_loss", "log-loss"),
    ("ece", "ECE"),
    ("pairwise_accuracy", "pairwise acc."),
    ("length_bias", "length bias"),
)
RANK_COLUMNS = (
    ("sibling_agreement", "sibling agreement"),
    ("rank_best_of_n", "best-of-N"),
    ("rank_length_bias", "length bias (pairs)"),
)
PAIR_COLUMNS = (
    ("accuracy", "accuracy"),
    ("mean_margin", "mean margin"),
    ("prefers_longer", "prefers longer"),
    ("chosen_longer", "chosen longer"),
    ("length_bias", "length bias"),
)


def add_parser(commands: argparse._SubParsersAction, parents: list) -> None:
    parser = commands.add_parser(
        "evaluate",
        parents=parents,
        help="compare fitted runs against a log's explicit labels",
        description="Metrics of each run's P(preferred) against the explicit labels of a log: AUC, "
        "MAE, RMSE, R^2, log-loss, ECE, pairwise accuracy within prompt and the length bias, with "
        "bootstrap intervals; or, with --pairs, accuracy on chosen/rejected pairs.",
    )
    parser.add_argument("run_dirs", nargs="+", help="run directories written by `pyro-irm fit`")
    parser.add_argument("--log", metavar="FILE", help="log with explicit labels (e.g. a held-out split)")
    parser.add_argument(
        "--pairs",
        metavar="FILE",
        help="chosen/rejected preference pairs instead (TRL, UltraFeedback binarized, hh-rlhf): "
        "accuracy as RewardBench computes it",
    )
    parser.add_argument(
        "--chosen-col", metavar="COLUMN", default="chosen", help="pairs: the chosen response's column"
    )
    parser.add_argument(
        "--rejected-col", metavar="COLUMN", default="rejected", help="pairs: the rejected response's column"
    )
    parser.add_argument(
        "--resamples",
        metavar="N",
        type=bounded(int, 0),
        default=200,
        help="bootstrap resamples for the 95%% intervals (0: none)",
    )
    parser.add_argument("--embeddings", metavar="FILE", help="precomputed embeddings of that log")
    parser.add_argument("--json", metavar="PATH", help="also write the metrics as JSON")
    add_cache_option(parser)
    add_schema_options(parser, actions=False)
    add_run_trust_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if (args.log is None) == (args.pairs is None):
        raise ValueError(
            "give --log (rows with explicit labels) or --pairs (chosen/rejected pairs), not both"
        )
    if args.pairs is not None:
        return _evaluate_pairs(args)
    from pyro_irm.evaluation import evaluate_run

    runs = [load_run(args, directory) for directory in args.run_dirs]
    results, logs, embedded = {}, {}, {}
    for run in runs:
        # Each run reads the log with its own column mapping, so the order of the runs changes nothing;
        # runs sharing a mapping share one reading, and runs sharing an encoder one encoding.
        schema = run_schema(args, run, actions=False)
        if schema not in logs:
            logs[schema] = read_log_from_args(args, args.log, schema, run=run)
        log = logs[schema]
        key = (schema, json.dumps(None if args.embeddings or run.encoder is None else run.encoder.to_dict()))
        if key not in embedded:
            embedded[key] = run_embeddings(run, log, args)
        name = run.name if run.name not in results else str(run.directory)
        results[name] = evaluate_run(run, log, embedded[key], resamples=args.resamples)
    first = next(iter(results.values()))
    explanations, columns = [], []
    if "sibling_agreement" in first:
        siblings = first["sibling_pairs"]
        few = " (few: read these loosely)" if siblings < 100 else ""
        explanations.append(
            f"Against the ranks of {args.log}{few}: sibling agreement is the share of the {siblings:,} "
            "pairs of replies to one message with different ranks that the reward orders as the rankers "
            "did; best-of-N the share of ranked sibling sets whose highest-reward reply is ranked best; "
            "length bias how much more often the reward prefers the longer reply of a pair than the "
            "rankers did."
        )
        columns += RANK_COLUMNS
    if "rows" in first:
        rows, pairs, prompts = first["rows"], first.get("pairs", 0), first.get("prompts_with_pairs", 0)
        few = " (few: read these loosely)" if rows < 100 or pairs < 30 else ""
        explanations.append(
            f"P(preferred) against the explicit labels of {rows:,} rows of {args.log}{few}. Pairwise "
            f"accuracy ranks the {pairs:,} pairs of responses to one prompt whose scores differ (in "
            f"{prompts:,} prompts); length bias is the reward's rank correlation with log length minus "
            "the truth's (0: no more length-driven than quality)."
        )
        columns += ROW_COLUMNS
    explanation = "\n".join(explanations)
    return _report(args, results, tuple(columns), explanation)


def _evaluate_pairs(args: argparse.Namespace) -> int:
    from pyro_irm.data.pairs import read_pairs
    from pyro_irm.evaluation import evaluate_pairs

    settings = read_settings(args)
    pairs = read_pairs(
        args.pairs,
        prompt=schema_from_args(args, actions=False).prompt,
        chosen=args.chosen_col,
        rejected=args.rejected_col,
        on_error="skip" if settings["skip_bad_rows"] else "raise",
        split=args.split,
        max_bad_fraction=settings["max_bad_fraction"] if settings["skip_bad_rows"] else None,
    )
    if pairs.report.dropped:
        print(pairs.report.summary(), file=sys.stderr)
    results = {}
    for directory in args.run_dirs:
        run = load_run(args, directory)
        name = run.name if run.name not in results else str(run.directory)
        results[name] = evaluate_pairs(run, pairs, args.cache_dir, resamples=args.resamples)
    explanation = (
        f"On {len(pairs):,} chosen/rejected pairs of {args.pairs}: accuracy is the share whose chosen "
        "response gets the higher reward (ties count as wrong, as in RewardBench); length bias is how "
        "much more often the reward prefers the longer response than the choosers did."
    )
    return _report(args, results, PAIR_COLUMNS, explanation)


def _report(args: argparse.Namespace, results: dict, columns, explanation: str) -> int:
    """Print the metrics, their intervals and what they mean; write them as JSON when asked."""
    from pyro_irm.tables import markdown_table

    header = ("run", *(title for _, title in columns))
    print(markdown_table(header, ((n, *(m.get(k) for k, _ in columns)) for n, m in results.items())))
    if args.resamples:
        intervals = {name: metrics.get("intervals", {}) for name, metrics in results.items()}
        print(f"95% intervals ({args.resamples} bootstrap resamples of whole trees, prompts or pairs):\n")
        rows = (
            (name, *(_interval(found.get(key)) for key, _ in columns)) for name, found in intervals.items()
        )
        print(markdown_table(header, rows))
    print(explanation)
    write_json(args, results)
    return EXIT_OK


def _interval(bounds) -> str | None:
    return None if bounds is None else f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"
