"""Chosen/rejected preference pairs, for evaluating a reward model as RewardBench does.

Read in the shapes people publish them in:

* TRL's explicit-prompt pairs: ``{"prompt", "chosen", "rejected"}``, each text or messages;
* UltraFeedback binarized: ``prompt`` text, ``chosen``/``rejected`` conversations (prompt + reply);
* TRL's implicit-prompt pairs and Anthropic hh-rlhf: ``{"chosen", "rejected"}`` alone, both repeating
  the prompt (message lists, or ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` texts).

Text rules are those of ``data/conversation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyro_irm.data.conversation import ConversationError, common_prompt, prompt_text, response_text
from pyro_irm.data.logs import (
    LoadReport,
    LogFormatError,
    OnError,
    RowProblem,
    checked_report,
    drop_or_raise,
)
from pyro_irm.data.readers import ParseError, iter_records, source_name


@dataclass(frozen=True)
class PreferencePairs:
    """``P`` pairs: one prompt, the chosen response and the rejected one.

    Attributes:
        prompts, chosen, rejected: ``P`` texts each.
        source_rows: ``P`` source row numbers (from 1).
        report: what was read and dropped.
    """

    prompts: list[str]
    chosen: list[str]
    rejected: list[str]
    source_rows: list[int]
    report: LoadReport

    def __len__(self) -> int:
        return len(self.prompts)


_FIX_PAIR = "Fix the row, name the columns (--prompt-col, --chosen-col, --rejected-col) or skip bad rows"


def _pair(record: dict, prompt: str, chosen: str, rejected: str) -> tuple[str, str, str]:
    for name in (chosen, rejected):
        if record.get(name) is None:
            raise RowProblem(name, "is missing")
    try:
        if record.get(prompt) is not None:
            return (
                prompt_text(record[prompt], prompt),
                response_text(record[chosen], chosen),
                response_text(record[rejected], rejected),
            )
        return common_prompt(record[chosen], record[rejected], f"{chosen}/{rejected}")
    except ConversationError as error:
        field, _, reason = str(error).partition(": ")
        raise RowProblem(field, reason) from None


def read_pairs(
    source: str | Path | Any,
    prompt: str = "prompt",
    chosen: str = "chosen",
    rejected: str = "rejected",
    on_error: OnError = "raise",
    split: str | None = None,
    max_bad_fraction: float | None = None,
) -> PreferencePairs:
    """Read chosen/rejected pairs (see the module docstring) from a file, hub name or rows in memory.

    Raises:
        LogFormatError: naming the source, row and field of a pair that cannot be read (with
            ``on_error="raise"``), or too many dropped rows, or none left.
    """
    name = source_name(source)
    prompts, chosen_texts, rejected_texts, rows, dropped = [], [], [], [], []
    rows_read = 0
    for row, record in iter_records(source, split):
        rows_read += 1
        try:
            if isinstance(record, ParseError):
                raise RowProblem(record.field, record.reason)
            pair = _pair(record, prompt, chosen, rejected)
            if not all(isinstance(text, str) for text in pair):
                raise RowProblem(chosen, "is not text or messages")
        except RowProblem as problem:
            drop_or_raise(problem, name, row, on_error, dropped, _FIX_PAIR)
            continue
        prompts.append(pair[0])
        chosen_texts.append(pair[1])
        rejected_texts.append(pair[2])
        rows.append(row)
    report = checked_report(name, rows_read, dropped, max_bad_fraction, _FIX_PAIR)
    if not prompts:
        raise LogFormatError(f"{name}: no usable pairs ({report.summary()})")
    return PreferencePairs(prompts, chosen_texts, rejected_texts, rows, report)
