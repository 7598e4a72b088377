"""How good a fitted run is: its metrics on a log with explicit labels, or on chosen/rejected
pairs, with bootstrap intervals (the library side of ``pyro-irm evaluate``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pyro_irm.analysis.metrics import bootstrap_intervals, feature_bias, label_metrics, pair_metrics
from pyro_irm.data.logs import FeedbackLog
from pyro_irm.encoders.cache import default_cache_root
from pyro_irm.encoders.embed import embed_rows, open_cache
from pyro_irm.runs import Run, true_scores


def evaluate_run(run: Run, log: FeedbackLog, embeddings: np.ndarray, resamples: int = 200) -> dict:
    """Label metrics of a run's P(preferred) on a log with explicit labels (graded truth, where the
    log was simulated, ranks pairs within prompt), the reward's length bias (docs/method.md, "Evaluation":
    against the graded truth where there is one, else the labels), and, with ``resamples``,
    95% bootstrap intervals of each (``"intervals"``; whole prompts are resampled)."""
    if not log.has_labels:
        raise ValueError(
            f"{log.report.source} has no explicit labels (column {run.schema.label!r} and --label-col); "
            "evaluation needs them"
        )
    labelled = np.flatnonzero(np.isfinite(log.labels))
    rewards = run.reward_model.score(embeddings).numpy().astype(np.float64)[labelled]
    probability = 1.0 / (1.0 + np.exp(-rewards))
    labels = np.asarray(log.labels)[labelled]
    truth = true_scores(log)
    reference = labels if truth is None else np.asarray(truth)[labelled]
    lengths = np.log1p([len(log.responses[i]) for i in labelled])
    prompts = np.asarray(log.prompt_ids)[labelled]

    def metrics_of(rows: np.ndarray, groups: np.ndarray) -> dict:
        graded = None if truth is None else reference[rows]
        metrics = label_metrics(labels[rows], probability[rows], groups, graded)
        metrics["length_bias"] = feature_bias(rewards[rows], lengths[rows], reference[rows])
        return metrics

    metrics = metrics_of(np.arange(len(labelled)), prompts)
    if resamples:
        metrics["intervals"] = bootstrap_intervals(metrics_of, prompts, resamples)
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
