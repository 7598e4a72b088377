"""``pyro-irm export``, ``serve`` and ``best-of-n``: the reward model handed to RLHF."""

from __future__ import annotations

import argparse
import json
import sys

from pyro_irm.cli.common import EXIT_OK, add_cache_option, add_quiet_option, run_embeddings, say
from pyro_irm.cli.schema import add_schema_options, read_log_from_args, schema_from_args
from pyro_irm.runs import Run


def _export(args: argparse.Namespace) -> int:
    run = Run.load(args.run_dir)
    out = run.export_hf(args.out)
    say(
        args,
        f"Wrote {out}: load it with AutoModelForSequenceClassification.from_pretrained("
        "DIR, trust_remote_code=True)",
    )
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pyro_irm.serve import TextScorer, create_app

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        say(args, f"serving on {args.host}: the server has no authentication; keep it behind a firewall")
    run = Run.load(args.run_dir)
    scorer = TextScorer(run, device=args.device)
    app = create_app(
        scorer,
        query_separator=args.query_separator,
        max_batch_rows=args.max_batch_rows,
        max_wait_ms=args.max_wait_ms,
        normalize=(scorer.mean, scorer.std) if args.normalize else None,
        description={"run": str(run.directory), "method": run.method, "normalized": args.normalize},
    )
    say(args, f"Serving {run.directory} ({run.method}) on http://{args.host}:{args.port}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    return EXIT_OK


def _best_of_n(args: argparse.Namespace) -> int:
    from pyro_irm.best_of_n import best_of_n
    from pyro_irm.data.logs import write_records

    run = Run.load(args.run_dir)
    log = read_log_from_args(args, args.candidates, schema_from_args(args, actions=False))
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
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    if result.summary is not None:
        summary = result.summary
        what = "graded scores" if log.truth is not None and "score" in log.truth else "labels"
        print(
            f"best-of-n over {summary['prompts']:,} prompts with {what}: win rate against random choice "
            f"{summary.get('win_rate_vs_random', float('nan')):.3f} (0.5 = chance), against the "
            f"label-optimal pick {summary.get('win_rate_vs_optimal', float('nan')):.3f} (0.5 = always "
            f"optimal); the pick is optimal on {summary.get('optimal_rate', float('nan')):.1%} of prompts",
            file=sys.stderr,
        )
    return EXIT_OK


def add_rlhf_parsers(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="write a run's reward model as a transformers model directory",
        description="Write the encoder, its pooling and the reward head as a directory that "
        "transformers.AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True) "
        "loads without pyro_irm (num_labels=1, the tokenizer beside it, safetensors weights); its "
        "config keeps the reward's mean and std over the training rows. The run must be fit from text.",
    )
    export.add_argument("run_dir", help="run directory written by `pyro-irm fit`")
    export.add_argument(
        "--out", required=True, help="directory to write (an earlier export there is replaced)"
    )
    add_quiet_option(export)
    export.set_defaults(handler=_export)

    serve = commands.add_parser(
        "serve",
        help="serve a run's rewards over HTTP (OpenRLHF's /get_reward)",
        description="POST /get_reward {'query': [...]} or {'prompts': [...], 'responses': [...]} -> "
        "{'rewards': [...]} (OpenRLHF's remote reward model); POST /score {'rows': [{'prompt', "
        "'response'}]}; GET /health. Concurrent requests are scored in shared batches. A query with "
        "'prompts' is split by removing the prompt from its start; a bare query at the last "
        "--query-separator.",
    )
    serve.add_argument("run_dir", help="run directory written by `pyro-irm fit` (from text)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--query-separator", help="split a bare query into prompt and response at its last SEP"
    )
    serve.add_argument(
        "--normalize", action="store_true", help="serve (reward - mean) / std of the training rows"
    )
    serve.add_argument(
        "--max-batch-rows", type=int, default=256, help="most rows scored together (default 256)"
    )
    serve.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with"
    )
    serve.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'auto'")
    add_quiet_option(serve)
    serve.set_defaults(handler=_serve)

    best = commands.add_parser(
        "best-of-n",
        help="pick the highest-reward response of each prompt's candidates",
        description="Score every candidate and pick each prompt's highest-reward response (prompts "
        "are grouped by --prompt-id-col, else by the prompt's text). With labels (or a simulated "
        "log's graded scores) it reports the win rate against random choice and against the "
        "label-optimal pick.",
    )
    best.add_argument("run_dir", help="run directory written by `pyro-irm fit`")
    best.add_argument("candidates", help="candidates: prompt and response columns, optional labels")
    best.add_argument("--out", help="where to write the picks (.jsonl, .csv, .parquet); default stdout")
    best.add_argument("--embeddings", help="precomputed embeddings of the candidates")
    add_cache_option(best)
    add_schema_options(best, actions=False)
    add_quiet_option(best)
    best.set_defaults(handler=_best_of_n)
