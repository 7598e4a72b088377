"""``pyro-irm serve``: a run's rewards over HTTP in OpenRLHF's shape."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

from pyro_irm.cli.common import EXIT_OK, add_run_trust_option, load_run, say
from pyro_irm.cli.options import bounded
from pyro_irm.serve import (
    API_KEY_VARIABLE,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
)


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
    parser.add_argument(
        "--host", metavar="HOST", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", metavar="PORT", type=bounded(int, 0, 65535), default=8000, help="port (default 8000)"
    )
    parser.add_argument(
        "--query-separator",
        metavar="TEXT",
        help="split a bare query into prompt and response at its last SEP",
    )
    parser.add_argument(
        "--normalize", action="store_true", help="serve (reward - mean) / std of the training rows"
    )
    parser.add_argument(
        "--max-batch-rows",
        metavar="N",
        type=bounded(int, 1),
        default=256,
        help="most rows scored together (default 256)",
    )
    parser.add_argument(
        "--max-wait-ms",
        metavar="MS",
        type=bounded(float, 0, 1000),
        default=5.0,
        help="how long a request waits for others to batch with, at most 1000 (default 5)",
    )
    parser.add_argument(
        "--max-body-mb",
        type=bounded(float, 0, open_low=True),
        default=DEFAULT_MAX_BODY_BYTES / 2**20,
        metavar="MB",
        help=f"largest request body read, in MiB; larger ones get 413 "
        f"(default {DEFAULT_MAX_BODY_BYTES // 2**20})",
    )
    parser.add_argument(
        "--body-timeout-s",
        type=bounded(float, 0, 3600, open_low=True),
        default=DEFAULT_BODY_TIMEOUT_S,
        metavar="SECONDS",
        help=f"a request whose body stops arriving this long gets 408 (default {DEFAULT_BODY_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--header-timeout-s",
        type=bounded(float, 0, 3600, open_low=True),
        default=DEFAULT_HEADER_TIMEOUT_S,
        metavar="SECONDS",
        help="a connection whose request headers have not all arrived this long after it opened (or "
        f"after its last answer) is closed (default {DEFAULT_HEADER_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' on every request (default: ${API_KEY_VARIABLE} if set, "
        "else none). The variable keeps the key out of the process list",
    )
    parser.add_argument(
        "--allow-open",
        action="store_true",
        help="listen beyond this machine (a --host other than loopback) without a key; without it "
        "that is refused, since anyone who reaches the port could use the server",
    )
    parser.add_argument("--device", metavar="DEVICE", default="cpu", help="'cpu', 'cuda' or 'auto'")
    add_run_trust_option(parser)
    parser.set_defaults(handler=run)


def _api_key(args: argparse.Namespace) -> str | None:
    """The key from --api-key, else the environment; an empty one is refused, not read as none."""
    if args.api_key is not None:
        if not args.api_key.strip():
            raise ValueError(
                "--api-key is empty (an unset variable, perhaps): give a key, or leave the flag out"
            )
        return args.api_key
    from_environment = os.environ.get(API_KEY_VARIABLE)
    if from_environment is not None and not from_environment.strip():
        raise ValueError(f"${API_KEY_VARIABLE} is set but empty: give it a key, or unset it")
    return from_environment


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, taken before the model loads so that a busy port is
    found at once.

    Raises:
        ValueError: naming the address when it is taken or cannot be bound.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise ValueError(f"--host {host!r} is not an address this machine can listen on ({error})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ValueError(
                f"port {port} on {host} is already in use by another process; choose another with --port"
            ) from None
        raise ValueError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    sock.listen(2048)
    return sock


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from pyro_irm.serve import TextScorer, create_app, header_timeout_protocol

    if args.query_separator == "":  # before the model loads; create_app refuses it too
        raise ValueError("--query-separator is empty; give the text before the response, or leave it out")
    api_key = _api_key(args)
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        if not args.allow_open:
            raise ValueError(
                f"--host {args.host} listens beyond this machine and no key is set: anyone who reaches the "
                f"port could use the server. Set ${API_KEY_VARIABLE} (or --api-key), or say --allow-open"
            )
        # Never silenced by --quiet: this is the one word that the server is open.
        print(
            f"pyro-irm serve: warning: serving on {args.host} without a key (--allow-open): anyone who "
            "reaches the port can use it",
            file=sys.stderr,
        )
    sock = bind(args.host, args.port)
    try:
        run = load_run(args, args.run_dir)
        scorer = TextScorer(run, device=args.device)
        app = create_app(
            scorer,
            query_separator=args.query_separator,
            max_batch_rows=args.max_batch_rows,
            max_wait_ms=args.max_wait_ms,
            normalize=(scorer.mean, scorer.std) if args.normalize else None,
            description={"run": str(run.directory), "method": run.method, "normalized": args.normalize},
            max_body_bytes=int(args.max_body_mb * 2**20),
            api_key=api_key,
            body_timeout_s=args.body_timeout_s,
        )
        say(args, f"Serving {run.directory} ({run.method}) on http://{args.host}:{args.port}")
        level = "warning" if args.quiet else "info"
        protocol = header_timeout_protocol(args.header_timeout_s)
        config = uvicorn.Config(app, log_level=level, timeout_graceful_shutdown=60, http=protocol)
        # Server.run, not uvicorn.run: that one swallows the KeyboardInterrupt which a SIGINT or
        # SIGTERM becomes once in-flight requests are answered, and would exit 0 where 130 is due.
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return EXIT_OK
