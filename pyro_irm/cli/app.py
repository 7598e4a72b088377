"""The ``pyro-irm`` command line: thin argument parsing over the Python API, one module per command.

Exit codes: 0 success; 2 bad input or usage (the message names the file, row and field); 130
interrupted; 1 anything unexpected (a bug: the traceback is printed).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import warnings

from pyro_irm.cli import (
    benchmark,
    best_of_n,
    demo,
    embed,
    evaluate,
    export,
    fit,
    report,
    score,
    serve,
    simulate,
)
from pyro_irm.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, global_options, import_plugins

COMMANDS = (demo, simulate, embed, fit, benchmark, score, evaluate, report, export, serve, best_of_n)

_EPILOG = """\
typical path on real text:
  pyro-irm simulate --dataset ultrafeedback --sample --out runs/train.jsonl
  pyro-irm simulate --dataset ultrafeedback --sample --split eval --seed 1 --out runs/test.jsonl
  pyro-irm embed runs/train.jsonl --out runs/train.npy
  pyro-irm fit runs/train.jsonl --embeddings runs/train.npy --method implicitrm --out runs/implicitrm
  pyro-irm evaluate runs/implicitrm --log runs/test.jsonl
  pyro-irm score runs/implicitrm runs/test.jsonl --out runs/scores.jsonl

comparing every estimator on one data set (the papers' protocol, 5 seeds):
  pyro-irm benchmark --dataset ultrafeedback --sample

exit codes: 0 success, 2 bad input or usage (the message says which file, row and field), 130
interrupted, 1 an unexpected error (a bug; the traceback is printed).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-irm",
        description="Unbiased reward models from implicit user feedback (clicks, copies, upvotes): "
        "simulate or load a log, embed its text, fit ImplicitRM or a baseline, score and evaluate. "
        "The method: docs/method.md.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[global_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"pyro-irm {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = [global_options(defaults=False)]
    for command in COMMANDS:
        command.add_parser(commands, parents)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyro_irm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _interrupt_on_sigterm() -> None:
    """SIGTERM ends a command as Ctrl-C does (exit 130, after what can be saved is saved)."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        import_plugins(arguments)
    except ValueError as error:
        print(f"pyro-irm: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args = build_parser().parse_args(arguments)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    previous = signal.getsignal(signal.SIGTERM)
    _interrupt_on_sigterm()
    if getattr(args, "quiet", False):
        # transformers and huggingface_hub read this when they load a model: no loading bars.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # A warning on the command line is a message to a user, not a pointer into our source. Only the
    # format changes: whoever records or filters warnings (a test, a caller) still sees them.
    previous_format, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"pyro-irm {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"pyro-irm {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`pyro-irm score ... | head -1`): end quietly. Python would report the
        # broken pipe again when it flushes stdout at exit, so stdout now goes nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except ConnectionError as error:  # after BrokenPipeError, one of its kind: a hub name, no network
        print(
            f"pyro-irm {args.command}: error: {error}; if it is a local file, check its path, else "
            "connect, or download it first",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    finally:
        warnings.formatwarning = previous_format
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
