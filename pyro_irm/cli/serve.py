"""``pyro-irm serve``: a run's rewards over HTTP in OpenRLHF's shape."""

from __future__ import annotations

import argparse

from pyro_irm.cli.common import EXIT_OK, say


def add_parser(commands: argparse._SubParsersAction, parents: list) -> None:
    parser = commands.add_parser(
        "serve",
        parents=parents,
        help="serve a run's rewards over HTTP (OpenRLHF's /get_reward)",
        description="POST /get_reward {'query': [...]} or {'prompts': [...], 'responses': [...]} -> "
        "{'rewards': [...]} (OpenRLHF's remote reward model); POST /score {'rows': [{'prompt', "
        "'response'}]}; GET /health. Concurrent requests are scored in shared batches. A query with "
        "'prompts' is split by removing the prompt from its start; a bare query at the last "
        "--query-separator.",
    )
    parser.add_argument("run_dir", help="run directory written by `pyro-irm fit` (from text)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--query-separator", help="split a bare query into prompt and response at its last SEP"
    )
    parser.add_argument(
        "--normalize", action="store_true", help="serve (reward - mean) / std of the training rows"
    )
    parser.add_argument(
        "--max-batch-rows", type=int, default=256, help="most rows scored together (default 256)"
    )
    parser.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with"
    )
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'auto'")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from pyro_irm.runs import Run
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
