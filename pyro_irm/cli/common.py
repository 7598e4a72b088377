"""What every command shares: exit codes, status lines, the quiet and cache options, a run's
embeddings of a log."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from pyro_irm.encoders.cache import default_cache_root
from pyro_irm.runs import Run, embeddings_for

EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def say(args: argparse.Namespace, message: str) -> None:
    """Status lines go to stderr, so stdout carries only results (tables, scores)."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")


def add_cache_option(parser) -> None:
    parser.add_argument("--cache-dir", help=f"embedding cache root (default: {default_cache_root()})")


def run_embeddings(run: Run, log, args: argparse.Namespace) -> np.ndarray:
    """The log's embeddings: ``--embeddings`` if given, else encoded (cached) with the run's encoder."""
    if args.embeddings is None and run.encoder is None:
        raise ValueError(
            f"{run.directory} was fit on precomputed embeddings; pass --embeddings for {log.report.source}"
        )
    encoder = run.encoder if args.embeddings is None else None
    embeddings, _ = embeddings_for(log, args.embeddings, encoder, args.cache_dir, not args.quiet)
    return embeddings
