"""Embedded, scored responses: what the semi-synthetic protocol simulates feedback on.

A data set here is responses with true graded scores and their embeddings, split into a training
pool (where feedback is simulated) and a test set (evaluated against the clean labels). Embeddings
come from the encoder through the on-disk cache, so a second run on the same rows encodes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyro_irm.benchmark.config import DATASETS
from pyro_irm.data.chatlog_simulation import response_features, synthetic_response_features
from pyro_irm.data.preference_sets import PREFERENCE_SETS, ScoredResponses, load_preference_set
from pyro_irm.data.simulation import SimulationConfig, simulate
from pyro_irm.encoders import EncoderConfig, TextEncoder, embed_rows, open_cache
from pyro_irm.encoders.cache import default_cache_root

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredSplit:
    """Rows of one split. ``embeddings`` ``(N, D)`` float32; ``scores`` ``(N,)`` true graded scores;
    ``prompt_ids`` ``(N,)`` int64 (rows of one prompt share one); ``log_length`` and ``has_code``
    ``(N,)`` the responses' log length and code-block flag (what drives acting in a chat log)."""

    embeddings: np.ndarray
    scores: np.ndarray
    prompt_ids: np.ndarray
    log_length: np.ndarray | None = None
    has_code: np.ndarray | None = None

    def subset(self, keep: np.ndarray) -> ScoredSplit:
        pick = lambda values: None if values is None else values[keep]  # noqa: E731
        return ScoredSplit(
            self.embeddings[keep],
            self.scores[keep],
            self.prompt_ids[keep],
            pick(self.log_length),
            pick(self.has_code),
        )

    def __len__(self) -> int:
        return self.embeddings.shape[0]


@dataclass(frozen=True)
class EmbeddedSet:
    """A data set ready for the protocol: a training pool and a test split on one label scale."""

    name: str
    train: ScoredSplit
    test: ScoredSplit
    threshold: float
    score_range: tuple[float, float]
    description: str

    def preference(self, split: ScoredSplit) -> np.ndarray:
        """``(N,)`` float32 clean labels ``1{score > threshold}``."""
        return (split.scores > self.threshold).astype(np.float32)


def _prompt_codes(prompt_ids: list[str]) -> np.ndarray:
    return np.unique(np.asarray(prompt_ids), return_inverse=True)[1].astype(np.int64)


def _held_out_prompts(prompt_ids: list[str], fraction: float) -> np.ndarray:
    """``(N,)`` bool: rows whose prompt falls in the held-out ``fraction`` (a stable hash of the id,
    so every response of a prompt lands on the same side, whatever the row order)."""
    buckets = np.array(
        [int.from_bytes(hashlib.blake2b(p.encode(), digest_size=4).digest(), "little") for p in prompt_ids]
    )
    return (buckets % 10_000) < fraction * 10_000


def _embed(
    scored: ScoredResponses, encoder: TextEncoder, cache_root: Path | None, progress: bool
) -> np.ndarray:
    cache = None if cache_root is None else open_cache(encoder, cache_root)
    return embed_rows(scored.prompts, scored.responses, encoder, cache, progress=progress)


def load_embedded_set(
    name: str,
    data_file: str | Path | None = None,
    test_file: str | Path | None = None,
    encoder_config: EncoderConfig | None = None,
    cache_root: str | Path | None = "default",
    limit: int | None = None,
    test_fraction: float = 0.2,
    num_rows: int = 20_000,
    progress: bool = False,
) -> EmbeddedSet:
    """Load, score and embed data set ``name`` (one of :data:`DATASETS`).

    Args:
        data_file: the data set's file (its train split), or None for the hub copy.
        test_file: its test split; without one, the prompts of ``test_fraction`` of the rows are
            held out as the test split.
        encoder_config: the encoder (default: all-MiniLM-L6-v2).
        cache_root: embedding cache directory; "default" for ``$PYRO_IRM_CACHE`` or the user cache,
            None for no cache.
        limit: read only the first ``limit`` records of each file.
        num_rows: synthetic only: training rows (the test split has half as many).
    """
    if name == "synthetic":
        return _synthetic(num_rows)
    if name not in PREFERENCE_SETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    scored = load_preference_set(name, data_file, limit=limit)
    encoder = TextEncoder(encoder_config or EncoderConfig())
    root = (
        default_cache_root()
        if cache_root == "default"
        else (None if cache_root is None else Path(cache_root))
    )
    embeddings = _embed(scored, encoder, root, progress)
    if test_file is not None:
        test_scored = load_preference_set(name, test_file, limit=limit)
        test_embeddings = _embed(test_scored, encoder, root, progress)
        train = _split(scored, embeddings, np.ones(len(scored), dtype=bool))
        test = _split(test_scored, test_embeddings, np.ones(len(test_scored), dtype=bool))
        source = f"{data_file} (train), {test_file} (test)"
    else:
        held_out = _held_out_prompts(scored.prompt_ids, test_fraction)
        if held_out.all() or not held_out.any():
            raise ValueError(
                f"{name}: too few prompts to hold out {test_fraction:.0%} of them as a test split"
            )
        train = _split(scored, embeddings, ~held_out)
        test = _split(scored, embeddings, held_out)
        source = f"{data_file or 'hub'} (test: the prompts of {test_fraction:.0%} of rows)"
    encoder_name = encoder.config.model
    description = (
        f"{name}: {len(train)} training and {len(test)} test responses from {source}; "
        f"embeddings of {encoder_name} (max_length {encoder.config.max_length})"
    )
    return EmbeddedSet(name, train, test, scored.threshold, scored.score_range, description)


def _split(scored: ScoredResponses, embeddings: np.ndarray, keep: np.ndarray) -> ScoredSplit:
    """The rows ``keep`` of a scored set, with prompt codes and the responses' length and code flag."""
    log_length, has_code, _ = response_features(scored.responses)
    return ScoredSplit(
        embeddings, scored.scores, _prompt_codes(scored.prompt_ids), log_length.numpy(), has_code.numpy()
    ).subset(keep)


def _synthetic(num_rows: int) -> EmbeddedSet:
    """Synthetic embeddings with a known nonlinear score (:func:`pyro_irm.data.simulation`); the
    threshold is the world's median score, so half the rows are preferred."""
    train_data = simulate(SimulationConfig(num_rows=num_rows, seed=0))
    test_data = simulate(SimulationConfig(num_rows=max(num_rows // 2, 2), seed=1))

    def split(data) -> ScoredSplit:
        # Rows of a synthetic world have no prompts; pairs of consecutive rows stand in for them.
        log_length, has_code = synthetic_response_features(data.embeddings)
        return ScoredSplit(
            data.embeddings.numpy(),
            data.truth.score.double().numpy(),
            np.arange(len(data)) // 2,
            log_length.numpy(),
            has_code.numpy(),
        )

    train, test = split(train_data), split(test_data)
    reference = torch.from_numpy(train.scores)
    threshold = float(torch.quantile(reference, 0.5))
    low, high = float(reference.min()), float(reference.max())
    description = f"synthetic: {len(train)} training and {len(test)} test rows, 32-dim embeddings"
    return EmbeddedSet("synthetic", train, test, threshold, (low, high), description)
