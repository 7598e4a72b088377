"""The one table formatter: a Markdown table, its columns padded to one width, so that it reads
aligned on a terminal and renders in a report."""

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
    first column is left-aligned and the others right-aligned. Each column is padded to its widest
    cell. Ends with a newline."""
    align = align or "l" + "r" * (len(header) - 1)
    cells = [list(map(str, header))] + [[format_cell(cell, digits) for cell in row] for row in rows]
    widths = [max(3, *(len(row[k]) for row in cells)) for k in range(len(header))]

    def padded(text: str, k: int) -> str:
        return {"l": text.ljust, "r": text.rjust, "c": text.center}[align[k]](widths[k])

    def rule(k: int) -> str:
        dashes = "-" * widths[k]
        return {"l": dashes, "r": dashes[:-1] + ":", "c": ":" + dashes[2:] + ":"}[align[k]]

    lines = ["| " + " | ".join(padded(text, k) for k, text in enumerate(row)) + " |" for row in cells]
    lines.insert(1, "| " + " | ".join(rule(k) for k in range(len(header))) + " |")
    return "\n".join(lines) + "\n"
