"""``pyro-irm score``: each row's reward (and, for ImplicitRM, its four group probabilities)."""

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
from pyro_irm.cli.options import bounded
from pyro_irm.cli.schema import add_schema_options, read_log_from_args, run_schema


def add_parser(commands: argparse._SubParsersAction, parents: list) -> None:
    parser = commands.add_parser(
        "score",
        parents=parents,
        help="reward new texts with a fitted model (JSONL or CSV out)",
        description="Encode (prompt, response) rows with the run's encoder and write each row's reward "
        "(a logit) and P(preferred). Without --out, JSON lines go to stdout.",
    )
    parser.add_argument("run_dir", help="run directory written by `pyro-irm fit`")
    parser.add_argument("input", help="rows to score: a file with prompt and response columns")
    parser.add_argument("--out", metavar="PATH", help="output file (.jsonl, .csv, .tsv, .parquet)")
    parser.add_argument("--embeddings", metavar="FILE", help="precomputed embeddings of the input")
    parser.add_argument("--with-text", action="store_true", help="copy prompt and response into the output")
    parser.add_argument(
        "--groups",
        action="store_true",
        help="also write each row's posterior probability of the four groups given its actions "
        "(implicitrm runs; the rows need the run's action, context and user columns)",
    )
    parser.add_argument(
        "--interval",
        type=bounded(float, 0, 1, open_low=True),
        metavar="PROBABILITY",
        help="also write each reward's central posterior interval of this probability (for example "
        "0.9) as reward_low and reward_high (runs fit with --bayesian-head)",
    )
    parser.add_argument(
        "--device",
        metavar="DEVICE",
        default="cpu",
        help="where the reward model scores: 'cpu', 'cuda' or 'auto' (the encoder: --encoder-device "
        "at fit time; default cpu)",
    )
    add_cache_option(parser)
    add_schema_options(parser, actions=False, labels=False)
    add_run_trust_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pyro_irm.data.logs import write_records
    from pyro_irm.device import resolve_device
    from pyro_irm.groups import GROUP_NAMES
    from pyro_irm.runs import run_groups

    refuse_overwriting_inputs(
        {"--out": args.out},
        {
            "input": args.input,
            "--embeddings": args.embeddings,
            "run's run.json": Path(args.run_dir) / "run.json",
        },
    )
    run = load_run(args, args.run_dir, device=str(resolve_device(args.device)))
    if args.interval is not None:
        if not 0.0 < args.interval < 1.0:
            raise ValueError(f"--interval must lie in (0, 1), got {args.interval}")
        if run.reward_model.head_posterior is None:
            raise ValueError(
                f"--interval: {run.directory} has no Bayesian head; fit it with --bayesian-head network"
            )
    if args.groups and not run.reward_model.model.observes_channels:
        raise ValueError(
            f"--groups: {run.directory} is a {run.method} fit; only a latent-group model "
            "(implicitrm) has groups"
        )
    # The run's column mapping (with --groups its actions, context and users too); flags override it.
    schema = run_schema(args, run, actions=args.groups, labels=False)
    log = read_log_from_args(args, args.input, schema, run=run)
    embeddings = run_embeddings(run, log, args)
    rewards = run.reward_model.score(embeddings).numpy()
    probability = 1.0 / (1.0 + np.exp(-rewards.astype(np.float64)))
    groups = run_groups(run, log, embeddings).numpy() if args.groups else None
    bounds = None
    if args.interval is not None:
        _, low, high = run.reward_model.reward_interval(embeddings, args.interval)
        bounds = np.stack([low.numpy(), high.numpy()], axis=1)
    records = [
        {
            "row": int(row),
            "prompt_id": prompt_id,
            "reward": float(reward),
            "preference_probability": float(p),
            **(
                {}
                if bounds is None
                else {"reward_low": float(bounds[i, 0]), "reward_high": float(bounds[i, 1])}
            ),
            **({} if groups is None else dict(zip(GROUP_NAMES, map(float, groups[i]), strict=True))),
            **({"prompt": prompt, "response": response} if args.with_text else {}),
        }
        for i, (row, prompt_id, reward, p, prompt, response) in enumerate(
            zip(
                log.source_rows,
                log.prompt_ids,
                rewards,
                probability,
                log.prompts,
                log.responses,
                strict=True,
            )
        )
    ]
    if args.out:
        write_records(args.out, records)
        say(args, f"Wrote {len(records):,} scores to {args.out}")
    else:
        for record in records:
            sys.stdout.write(strict_json(record, ensure_ascii=False) + "\n")
    return EXIT_OK
