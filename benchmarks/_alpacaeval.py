"""The AlpacaEval annotations the encoding benchmarks read (CC BY-NC: not bundled, found beside
the checkout in ``../shared/data/`` or given with ``--data-file``)."""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_eval_gpt4_turbo_scores.jsonl.gz"
)


def missing(path: Path) -> bool:
    """True, after saying so on stderr, when ``path`` is not there (the script then exits 2)."""
    if path.is_file():
        return False
    print(
        f"{path}: no such file; this benchmark reads AlpacaEval's annotations "
        "(CC BY-NC, not bundled): give --data-file PATH",
        file=sys.stderr,
    )
    return True
