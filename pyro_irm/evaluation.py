"""How good a fitted run is: its metrics on a log with explicit labels, or on chosen/rejected
pairs, with bootstrap intervals (the library side of ``pyro-irm evaluate``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pyro_irm.analysis.metrics import (
    bootstrap_intervals,
    feature_bias,
    label_metrics,
    pair_metrics,
    rank_metrics,
)
from pyro_irm.data.logs import FeedbackLog
from pyro_irm.encoders.cache import default_cache_root
from pyro_irm.encoders.embed import embed_rows, open_cache
from pyro_irm.runs import Run, true_scores


def evaluate_run(run: Run, log: FeedbackLog, embeddings: np.ndarray, resamples: int = 200) -> dict:
    """Metrics of a run's reward on a log with explicit labels or ranks, and, with ``resamples``,
    95% bootstrap intervals of each (``"intervals"``; whole clusters resampled: the log's
    conversation trees where it names them, else its prompts).

    Labels: AUC, log-loss, ECE, ... of P(preferred), pairwise accuracy within prompt (graded truth
    ranks pairs where the log was simulated) and the length bias (docs/method.md, "Evaluation").
    Ranks (siblings ranked by people, 0 = best): :func:`~pyro_irm.analysis.metrics.rank_metrics`,
    whose keys are prefixed ``rank_`` where they would clash with the label metrics.
    """
    has_ranks = log.ranks is not None and bool(np.isfinite(log.ranks).any())
    if not log.has_labels and not has_ranks:
        raise ValueError(
            f"{log.report.source} has no explicit labels (column {run.schema.label!r}, --label-col) and no "
            f"ranks (--rank-col); evaluation needs one of them"
        )
    rewards = run.reward_model.score(embeddings).numpy().astype(np.float64)
    labels = np.asarray(log.labels) if log.has_labels else np.full(len(log), np.nan)
    ranks = np.asarray(log.ranks) if has_ranks else np.full(len(log), np.nan)
    truth = true_scores(log)
    lengths = np.log1p([len(response) for response in log.responses])
    prompts = np.unique(np.asarray(log.prompt_ids), return_inverse=True)[1]
    clusters = np.unique(
        np.asarray(log.clusters if log.clusters is not None else log.prompt_ids), return_inverse=True
    )[1]

    def metrics_of(rows: np.ndarray, groups: np.ndarray) -> dict:
        # A resampled cluster gets a group label of its own; a prompt lies inside one cluster.
        within = groups * (prompts.max() + 1) + prompts[rows] if log.clusters is not None else groups
        metrics: dict = {}
        if has_ranks:
            found = rank_metrics(ranks[rows], rewards[rows], within, lengths[rows])
            metrics.update(
                {("rank_" + k if k in ("best_of_n", "length_bias") else k): v for k, v in found.items()}
            )
        labelled = np.flatnonzero(np.isfinite(labels[rows]))
        if labelled.size:
            picked = rows[labelled]
            reference = labels[picked] if truth is None else np.asarray(truth)[picked]
            probability = 1.0 / (1.0 + np.exp(-rewards[picked]))
            graded = None if truth is None else reference
            metrics.update(label_metrics(labels[picked], probability, within[labelled], graded))
            metrics["length_bias"] = feature_bias(rewards[picked], lengths[picked], reference)
        return metrics

    metrics = metrics_of(np.arange(len(log)), clusters)
    if resamples:
        metrics["intervals"] = bootstrap_intervals(metrics_of, clusters, resamples)
    return metrics


def evaluate_pairs(run: Run, pairs, cache_root: str | Path | None = None, resamples: int = 200) -> dict:
    """RewardBench-style metrics of a run on chosen/rejected ``pairs`` (see
    :func:`pyro_irm.analysis.metrics.pair_metrics`), with 95% bootstrap intervals over pairs."""
    if run.encoder is None:
        raise ValueError(
            f"{run.directory} was fit on precomputed embeddings; evaluating pairs needs its encoder"
        )
    encoder = run.text_encoder()
    cache = open_cache(encoder, cache_root or default_cache_root())
    scored, lengths = {}, {}
    for side in ("chosen", "rejected"):
        texts = getattr(pairs, side)
        embeddings = embed_rows(pairs.prompts, texts, encoder, cache)
        scored[side] = run.reward_model.score(embeddings).numpy().astype(np.float64)
        lengths[side] = np.array([len(text) for text in texts])

    def metrics_of(rows: np.ndarray, groups: np.ndarray) -> dict:
        return pair_metrics(
            scored["chosen"][rows],
            scored["rejected"][rows],
            lengths["chosen"][rows],
            lengths["rejected"][rows],
        )

    every = np.arange(len(pairs))
    metrics = metrics_of(every, every)
    if resamples:
        metrics["intervals"] = bootstrap_intervals(metrics_of, every, resamples)
    return metrics
