"""Real preference data sets as rows of (prompt, response, true score), for semi-synthetic logs.

Each adapter reads its data set in the published format, from the Hugging Face hub (its hub name)
or from a local file or saved directory in the same format, and turns every response into one row.
The preference threshold and label scale follow docs/method.md (the seed papers' protocol):

============== ===================================== ========================== =================
name           hub name                              score                      preferred when
============== ===================================== ========================== =================
helpsteer      nvidia/HelpSteer                      ``helpfulness`` 0-4        score > 2
ultrafeedback  HuggingFaceH4/ultrafeedback_binarized ``score_chosen/rejected``  score > 6.5
                                                     1-10, both responses kept
pku-saferlhf   PKU-Alignment/PKU-SafeRLHF            minus ``severity_level``   severity <= 1
                                                     (0-3) of each response     (not harmful)
alpacaeval     (local file only)                     judge ``score`` 0-1        score > 0.5
============== ===================================== ========================== =================

PKU-SafeRLHF's positive class in the papers is *harmful* (severity > 1.5); the reward is its
negation, so the score here is ``-severity`` and a preferred row is a harmless one.

Nothing here imports torch or numpy: the command line lists the data sets without loading them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

Row = tuple[str, str, float]


class BadField(Exception):
    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


def _text(record: dict, name: str) -> str:
    value = record.get(name)
    if isinstance(value, list):  # chat format: a list of {"role", "content"} messages
        replies = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "assistant"]
        value = replies[-1] if replies else None
    if not isinstance(value, str):
        raise BadField(name, "is missing" if value is None else f"is a {type(value).__name__}, not text")
    return value


def _score(record: dict, name: str) -> float:
    value = record.get(name)
    if value is None:
        raise BadField(name, "is missing")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise BadField(name, f"{value!r} is not a number") from None
    if not math.isfinite(score):
        raise BadField(name, f"{score} is not finite")
    return score


def _helpsteer(record: dict) -> list[Row]:
    return [(_text(record, "prompt"), _text(record, "response"), _score(record, "helpfulness"))]


def _ultrafeedback(record: dict) -> list[Row]:
    prompt = _text(record, "prompt")
    return [
        (prompt, _text(record, "chosen"), _score(record, "score_chosen")),
        (prompt, _text(record, "rejected"), _score(record, "score_rejected")),
    ]


def _pku_saferlhf(record: dict) -> list[Row]:
    prompt = _text(record, "prompt")
    return [
        (prompt, _text(record, f"response_{k}"), -_score(record, f"response_{k}_severity_level"))
        for k in (0, 1)
    ]


def _alpacaeval(record: dict) -> list[Row]:
    prompt = _text(record, "prompt" if "prompt" in record else "instruction")
    response = _text(record, "response" if "response" in record else "output")
    return [(prompt, response, _score(record, "score"))]


@dataclass(frozen=True)
class PreferenceSetSpec:
    """How one data set becomes scored rows."""

    name: str
    hub_name: str | None
    train_split: str
    test_split: str
    threshold: float
    score_range: tuple[float, float]
    to_rows: Callable[[dict], list[Row]]


PREFERENCE_SETS: dict[str, PreferenceSetSpec] = {
    spec.name: spec
    for spec in (
        PreferenceSetSpec(
            "helpsteer", "nvidia/HelpSteer", "train", "validation", 2.0, (0.0, 4.0), _helpsteer
        ),
        PreferenceSetSpec(
            "ultrafeedback",
            "HuggingFaceH4/ultrafeedback_binarized",
            "train_prefs",
            "test_prefs",
            6.5,
            (1.0, 10.0),
            _ultrafeedback,
        ),
        PreferenceSetSpec(
            "pku-saferlhf", "PKU-Alignment/PKU-SafeRLHF", "train", "test", -1.5, (-3.0, 0.0), _pku_saferlhf
        ),
        PreferenceSetSpec("alpacaeval", None, "train", "test", 0.5, (0.0, 1.0), _alpacaeval),
    )
}
