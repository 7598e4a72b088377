"""Data shipped with the package: the UltraFeedback sample (MIT) and an OpenAssistant sample
(Apache-2.0); see README.md here."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parent
SPLITS = ("train", "eval")


def ultrafeedback_sample(split: str = "train") -> Path:
    """Path of the bundled UltraFeedback sample: ``"train"`` (1,000 pairs) or ``"eval"`` (200 pairs)."""
    if split not in SPLITS:
        raise ValueError(f"the UltraFeedback sample has splits {SPLITS}, not {split!r}")
    return SAMPLES / f"ultrafeedback_binarized_sample_{split}.jsonl.gz"


def oasst_sample() -> Path:
    """Path of the bundled OpenAssistant sample: 100 English oasst1 trees (687 assistant replies with
    their emoji reactions and sibling ranks; Apache-2.0, see README.md here), one nested tree per line."""
    return SAMPLES / "oasst_en_100_trees.jsonl.gz"
