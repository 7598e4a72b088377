"""The real-reaction benchmark: conversation trees with people's reactions, scored against the ranks
other people gave sibling replies.

Every variant is fit on the reactions of the trees outside one fold and scores the replies of the
trees inside it (folds by tree, so no conversation is both fit and scored); the out-of-fold rewards of
all folds are then scored together: sibling-rank agreement, best-of-N among ranked siblings and the
length bias on sibling pairs, with percentile intervals from resampling whole trees, and each
variant's difference from ``naive`` on the same resamples (paired). Ranks never enter a fit, except
in ``supervised_ranks``, a reference: a classifier of "ranked best" trained on the ranks of the
training folds, what an annotated set of the same size would give.

Variants: those of :mod:`pyro_irm.benchmark.chatlog` that apply (``naive`` on "any positive
reaction", ``naive_no_negative``, ``implicitrm_one_channel`` on the first positive channel with the
exposure context, ``implicitrm_channels`` on every reaction channel with it,
``implicitrm_no_context`` without it, ``implicitrm_users`` where the log names users), and every
single-action estimator (``upu``, ``nnpu``, ``ips``, ``snips``, ``causalrm``, ``ubpr``, ``relmf``) on
"any positive reaction", its propensity estimated from the embedding and the context.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch

from pyro_irm.analysis.metrics import rank_metrics
from pyro_irm.benchmark.chatlog import variant_data
from pyro_irm.benchmark.config import TREE_METRICS, TreeBenchmarkConfig
from pyro_irm.channels import ChannelSpec
from pyro_irm.data.feedback import FeedbackData
from pyro_irm.data.logs import FeedbackLog
from pyro_irm.inference.config import TrainConfig
from pyro_irm.inference.svi import fit_selected
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.identifiability import IdentifiabilityWarning
from pyro_irm.tables import markdown_table

logger = logging.getLogger(__name__)


@dataclass
class TreeBenchmarkResult:
    """``metrics[variant][metric]`` on the out-of-fold rewards, their 95% ``intervals`` over tree
    resamples, and ``versus_naive[variant][metric]``: (difference, low, high) from naive, paired."""

    description: str
    metrics: dict[str, dict[str, float]]
    intervals: dict[str, dict[str, tuple[float, float]]]
    versus_naive: dict[str, dict[str, tuple[float, float, float]]]
    rewards: dict[str, np.ndarray]
    seconds: float

    def to_dict(self) -> dict:
        return {
            "description": self.description,
            "metrics": self.metrics,
            "intervals": self.intervals,
            "versus_naive": self.versus_naive,
            "seconds": self.seconds,
        }


def applicable(variant: str, data: FeedbackData) -> bool:
    if variant == "implicitrm_users":
        return data.users is not None
    if variant in ("implicitrm_no_context",):
        return data.context is not None
    if variant == "naive_no_negative":
        return bool(data.acted_columns("negative"))
    return True


def tree_folds(clusters: list[str], folds: int, seed: int) -> np.ndarray:
    """``(N,)`` fold of each row: whole trees (clusters) dealt to folds in a seeded random order."""
    names, codes = np.unique(np.asarray(clusters), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of_tree = np.empty(len(names), dtype=np.int64)
    fold_of_tree[order] = np.arange(len(names)) % folds
    return fold_of_tree[codes]


def run_tree_benchmark(
    log: FeedbackLog,
    embeddings: np.ndarray,
    config: TreeBenchmarkConfig | None = None,
    model_config: ModelConfig | None = None,
    description: str = "",
    progress: bool = False,
) -> TreeBenchmarkResult:
    """Fit every applicable variant on each fold's training trees and score the held-out trees'
    replies against their ranks (see the module's docstring). ``embeddings`` ``(N, D)`` are the log's."""
    config = config or TreeBenchmarkConfig()
    model_config = model_config or ModelConfig()
    if log.ranks is None:
        raise ValueError(f"{log.report.source} has no ranks (--rank-col): the benchmark scores against them")
    started = time.perf_counter()
    data = log.to_feedback(embeddings)
    clusters = log.clusters if log.clusters is not None else log.prompt_ids
    fold = tree_folds(clusters, config.folds, config.seed)
    variants = [v for v in config.variants if applicable(v, data)]
    rewards = {variant: np.full(len(log), np.nan) for variant in variants}
    for k in range(config.folds):
        train = torch.from_numpy(np.flatnonzero(fold != k))
        test = torch.from_numpy(np.flatnonzero(fold == k))
        for variant in variants:
            fit_started = time.perf_counter()
            rows, train_config = _variant_rows(variant, data.subset(train), log.ranks[train.numpy()])
            train_config = replace(
                train_config, seed=config.seed, max_epochs=config.max_epochs, progress=False
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", IdentifiabilityWarning)
                result, _ = fit_selected(rows, train_config, config.model_configs(model_config))
            rewards[variant][test.numpy()] = result.reward_model.score(data.embeddings[test]).numpy()
            line = (
                f"fold {k + 1} of {config.folds}: {variant:<24} ({time.perf_counter() - fit_started:.0f} s)"
            )
            if progress:
                print(line, file=sys.stderr, flush=True)
            logger.info(line)
    metrics, intervals, versus = _score(log, clusters, rewards, config)
    description = (
        f"{description or log.report.source}: {len(log)} replies in {len(set(clusters))} trees, "
        f"{config.folds} folds by tree; {metrics[variants[0]].get('sibling_pairs', 0)} ranked sibling pairs"
    )
    return TreeBenchmarkResult(
        description, metrics, intervals, versus, rewards, time.perf_counter() - started
    )


def _variant_rows(variant: str, train: FeedbackData, ranks: np.ndarray) -> tuple[FeedbackData, TrainConfig]:
    """What ``variant`` fits on the training trees, and how."""
    if variant == "supervised_ranks":  # 1 for a reply ranked best among its siblings
        ranked = np.flatnonzero(np.isfinite(ranks))
        siblings = train.prompt_ids.numpy()[ranked]
        best = np.full(siblings.max() + 1, np.inf)
        np.minimum.at(best, siblings, ranks[ranked])
        rows = train.subset(torch.from_numpy(ranked))
        labels = torch.from_numpy((ranks[ranked] == best[siblings]).astype(np.float32))
        return replace(rows, actions=labels, channels=(ChannelSpec("action"),), users=None), TrainConfig(
            method="naive"
        )
    rows, train_config, method = variant_data(variant, train, dwell_threshold=0.0)
    return rows, replace(train_config, method=method)


def _score(log: FeedbackLog, clusters, rewards: dict[str, np.ndarray], config: TreeBenchmarkConfig):
    """Metrics of every variant's out-of-fold rewards, intervals over whole trees, paired
    differences from naive."""
    ranks = np.asarray(log.ranks, dtype=np.float64)
    lengths = np.log1p([len(r) for r in log.responses])
    prompts = np.unique(np.asarray(log.prompt_ids), return_inverse=True)[1]
    _, trees = np.unique(np.asarray(clusters), return_inverse=True)
    members = [np.flatnonzero(trees == t) for t in range(trees.max() + 1)]

    def of(rows: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, float]]:
        within = groups * (prompts.max() + 1) + prompts[rows]
        return {v: rank_metrics(ranks[rows], r[rows], within, lengths[rows]) for v, r in rewards.items()}

    every = np.arange(len(log))
    metrics = of(every, trees)
    generator = np.random.default_rng(config.seed)
    draws: dict[str, dict[str, list[float]]] = {v: {m: [] for m in TREE_METRICS} for v in rewards}
    differences: dict[str, dict[str, list[float]]] = {v: {m: [] for m in TREE_METRICS} for v in rewards}
    for _ in range(config.resamples):
        chosen = generator.integers(0, len(members), size=len(members))
        rows = np.concatenate([members[t] for t in chosen])
        groups = np.repeat(np.arange(len(chosen)), [len(members[t]) for t in chosen])
        found = of(rows, groups)
        for variant, values in found.items():
            for metric in TREE_METRICS:
                value = values.get(metric, float("nan"))
                draws[variant][metric].append(value)
                if "naive" in found:
                    differences[variant][metric].append(value - found["naive"].get(metric, float("nan")))

    def interval(values: list[float]) -> tuple[float, float]:
        values = np.asarray(values)
        values = values[np.isfinite(values)]
        if not values.size:
            return (float("nan"), float("nan"))
        return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))

    intervals = {v: {m: interval(draws[v][m]) for m in TREE_METRICS} for v in rewards}
    versus = {}
    if "naive" in rewards:
        for variant in rewards:
            if variant == "naive":
                continue
            versus[variant] = {
                m: (
                    metrics[variant].get(m, float("nan")) - metrics["naive"].get(m, float("nan")),
                    *interval(differences[variant][m]),
                )
                for m in TREE_METRICS
            }
    return metrics, intervals, versus


def format_tree_table(result: TreeBenchmarkResult) -> str:
    """A Markdown table: each metric with its interval, and the difference in sibling agreement from naive."""

    def cell(variant: str, metric: str) -> str:
        value = result.metrics[variant].get(metric, float("nan"))
        low, high = result.intervals[variant][metric]
        return f"{value:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(value) else "n/a"

    def versus(variant: str) -> str:
        if variant not in result.versus_naive:
            return ""
        difference, low, high = result.versus_naive[variant]["sibling_agreement"]
        return f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]"

    header = ("variant", "sibling agreement", "best-of-N", "length bias", "agreement vs naive")
    rows = [(v, *(cell(v, m) for m in TREE_METRICS), versus(v)) for v in result.metrics]
    return markdown_table(header, rows)
