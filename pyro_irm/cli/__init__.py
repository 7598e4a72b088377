"""The ``pyro-irm`` command line."""

from pyro_irm.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
