"""``pyro-irm best-of-n``: each prompt's highest-reward candidate, and its win rate when labelled."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyro_irm.atomic import strict_json
from pyro_irm.cli.common import (
    EXIT_OK,
    add_cache_option,
    add_run_trust_option,
    load_run,
    refuse_overwriting_inputs,
    run_embeddings,
    say,
)
from pyro_irm.cli.schema import add_schema_options, read_log_from_args, run_schema


def add_parser(commands: argparse._SubParsersAction, parents: list) -> None:
    parser = commands.add_parser(
        "best-of-n",
        parents=parents,
        help="pick the highest-reward response of each prompt's candidates",
        description="Score every candidate and pick each prompt's highest-reward response (prompts "
        "are grouped by --prompt-id-col, else by the prompt's text). With labels (or a simulated "
        "log's graded scores) it reports the win rate against random choice and against the "
        "label-optimal pick.",
    )
    parser.add_argument("run_dir", help="run directory written by `pyro-irm fit`")
    parser.add_argument("candidates", help="candidates: prompt and response columns, optional labels")
    parser.add_argument(
        "--out", metavar="PATH", help="where to write the picks (.jsonl, .csv, .parquet); default stdout"
    )
    parser.add_argument("--embeddings", metavar="FILE", help="precomputed embeddings of the candidates")
    add_cache_option(parser)
    add_schema_options(parser, actions=False)
    add_run_trust_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pyro_irm.data.logs import write_records
    from pyro_irm.rerank import best_of_n

    refuse_overwriting_inputs(
        {"--out": args.out},
        {
            "candidates": args.candidates,
            "--embeddings": args.embeddings,
            "run's run.json": Path(args.run_dir) / "run.json",
        },
    )
    run = load_run(args, args.run_dir)
    log = read_log_from_args(args, args.candidates, run_schema(args, run, actions=False), run=run)
    embeddings = run_embeddings(run, log, args)
    rewards = run.reward_model.score(embeddings).numpy()
    quality = None
    if log.truth is not None and "score" in log.truth:
        quality = log.truth["score"]  # a simulated log's graded score
    elif log.has_labels:
        quality = log.labels
    result = best_of_n(rewards, log.prompt_ids, quality)
    records = [
        {
            "prompt_id": str(prompt),
            "row": int(log.source_rows[pick]),
            "candidates": int(count),
            "reward": float(rewards[pick]),
            "prompt": log.prompts[pick],
            "response": log.responses[pick],
        }
        for pick, prompt, count in zip(result.picks, result.prompts, result.candidates, strict=True)
    ]
    if args.out:
        write_records(args.out, records)
        say(args, f"Wrote {len(records):,} picks to {args.out}")
    else:
        for record in records:
            sys.stdout.write(strict_json(record, ensure_ascii=False) + "\n")
    if result.summary is not None:
        summary = result.summary
        what = "graded scores" if log.truth is not None and "score" in log.truth else "labels"
        intervals = summary.get("intervals", {})

        def rate(name: str, percent: bool = False) -> str:
            value, low_high = summary.get(name, float("nan")), intervals.get(name)
            shown = f"{value:.1%}" if percent else f"{value:.3f}"
            if low_high is None:
                return shown
            low, high = low_high
            return shown + (f" [{low:.1%}, {high:.1%}]" if percent else f" [{low:.3f}, {high:.3f}]")

        print(
            f"best-of-n over {summary['prompts']:,} prompts with {what} (95% intervals over prompts): win "
            f"rate against random choice {rate('win_rate_vs_random')} (0.5 = chance), against the "
            f"label-optimal pick {rate('win_rate_vs_optimal')} (0.5 = always optimal); the pick is "
            f"optimal on {rate('optimal_rate', percent=True)} of prompts; "
            f"{summary.get('tied_prompts', 0):,} prompts with several candidates at the highest reward, "
            "each counted as the average of those candidates",
            file=sys.stderr,
        )
    return EXIT_OK
