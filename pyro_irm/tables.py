"""The one table formatter: a Markdown table, which reads on a terminal and renders in a report."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence


def format_cell(value: object, digits: int = 3) -> str:
    """A float with ``digits`` decimals ('n/a' when not finite, '—' when missing); integers, text
    and anything else as ``str`` gives them."""
    if value is None:
        return "—"
    if isinstance(value, bool | numbers.Integral) or not isinstance(value, numbers.Real):
        return str(value)
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def mean_std(entry: dict[str, float], digits: int = 3) -> str:
    """``'mean ± std'`` of a ``{'mean', 'std'}`` summary."""
    if not math.isfinite(entry["mean"]):
        return "n/a"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[object]], digits: int = 3, align: str | None = None
) -> str:
    """A Markdown table: ``header`` names the columns, each row is a sequence of cells (numbers get
    ``digits`` decimals). ``align`` is one character per column, 'l', 'r' or 'c'; by default the
    first column is left-aligned and the others right-aligned. Ends with a newline."""
    align = align or "l" + "r" * (len(header) - 1)
    rules = {"l": "---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(rules[a] for a in align) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(cell, digits) for cell in row) + " |")
    return "\n".join(lines) + "\n"
