"""Metrics of a reward model against the truth, and of posterior groups against simulated groups.

scikit-learn computes what it has (AUC, MAE, RMSE, log-loss, R^2, accuracy); the expected
calibration error and the pairwise accuracy within prompt are written here."""

from __future__ import annotations

import numpy as np
import torch
from sklearn import metrics as sk

from pyro_irm.data.feedback import FeedbackData
from pyro_irm.groups import NUM_GROUPS
from pyro_irm.models.reward_model import RewardModel

_EPS = 1e-7


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def auc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels``; NaN if one class is missing."""
    labels, scores = _numpy(labels), _numpy(scores)
    if labels.min() == labels.max():
        return float("nan")
    return float(sk.roc_auc_score(labels, scores))


def mae(targets, probabilities) -> float:
    """Mean absolute error of predicted probabilities against 0/1 (or probability) targets."""
    return float(sk.mean_absolute_error(_numpy(targets), _numpy(probabilities)))


def rmse(targets, probabilities) -> float:
    """Root mean squared error of predicted probabilities."""
    return float(sk.root_mean_squared_error(_numpy(targets), _numpy(probabilities)))


def log_loss(labels, probabilities) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-7, 1 - 1e-7]."""
    labels, probabilities = _numpy(labels), np.clip(_numpy(probabilities), _EPS, 1 - _EPS)
    return float(sk.log_loss(labels, probabilities, labels=[0.0, 1.0]))


def expected_calibration_error(labels, probabilities, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width bins: sum over bins of weight * |mean label - mean probability|."""
    labels, probabilities = _numpy(labels), _numpy(probabilities)
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(labels[mask].mean() - probabilities[mask].mean())
    return float(error)


def group_accuracy(true_groups, group_probabilities) -> float:
    """Share of rows whose most probable group is the true group; ``(N,), (N, 4)``."""
    assigned = torch.as_tensor(group_probabilities).argmax(-1)
    return float(sk.accuracy_score(_numpy(true_groups), _numpy(assigned)))


def group_log_loss(true_groups, group_probabilities) -> float:
    """Mean ``-log P(true group)``, probabilities clipped at 1e-7."""
    probabilities = torch.as_tensor(group_probabilities, dtype=torch.float64).clamp_min(_EPS)
    picked = probabilities.gather(-1, torch.as_tensor(true_groups).long()[:, None])
    return float(-picked.log().mean())


def prior_group_accuracy(true_groups) -> float:
    """Accuracy of always naming the most frequent true group: what a constant guess achieves."""
    counts = torch.bincount(torch.as_tensor(true_groups).long(), minlength=NUM_GROUPS)
    return float(counts.max() / counts.sum())


def evaluate(
    reward_model: RewardModel, data: FeedbackData, index: torch.Tensor | None = None
) -> dict[str, float]:
    """Reward and group metrics of ``reward_model`` on rows ``index`` of simulated ``data``.

    Reward metrics compare P(preferred) with the true binary preference r. Group metrics compare
    the exact posterior over groups with the simulated groups, on all rows and on y = 0 rows (the
    hard ones), beside the accuracy of the best constant guess on those rows.
    """
    if data.truth is None:
        raise ValueError("evaluate needs simulated data with ground truth (FeedbackData.truth)")
    rows = data if index is None else data.subset(index)
    truth = rows.truth
    probability = reward_model.preference_probability(rows.embeddings, rows.context)
    groups = reward_model.posterior_groups(rows.embeddings, rows.actions, rows.context)
    silent = rows.actions == 0
    return {
        "auc": auc(truth.preference, probability),
        "mae": mae(truth.preference, probability),
        "rmse": rmse(truth.preference, probability),
        "log_loss": log_loss(truth.preference, probability),
        "ece": expected_calibration_error(truth.preference, probability),
        "group_accuracy": group_accuracy(truth.group, groups),
        "group_log_loss": group_log_loss(truth.group, groups),
        "no_action_group_accuracy": group_accuracy(truth.group[silent], groups[silent]),
        "no_action_prior_accuracy": prior_group_accuracy(truth.group[silent]),
    }


def r2(targets, probabilities) -> float:
    """Coefficient of determination of ``probabilities`` for ``targets``: 1 - SSE / SST."""
    targets, probabilities = _numpy(targets), _numpy(probabilities)
    if targets.min() == targets.max():
        return float("nan")
    return float(sk.r2_score(targets, probabilities))


def pairwise_accuracy(true_scores, predicted, groups) -> float:
    """Within each group (prompt), the share of row pairs with different true scores that
    ``predicted`` orders the same way; a tie in ``predicted`` counts one half. NaN without pairs."""
    return _pairs(true_scores, predicted, groups)[0]


def ranked_pairs(true_scores, groups) -> tuple[int, int]:
    """``(pairs, groups)``: the row pairs with different true scores within a group, which
    :func:`pairwise_accuracy` averages over, and the groups that hold any."""
    _, pairs, with_pairs = _pairs(true_scores, np.zeros(len(_numpy(true_scores))), groups)
    return pairs, with_pairs


def _pairs(true_scores, predicted, groups) -> tuple[float, int, int]:
    true_scores, predicted = _numpy(true_scores), _numpy(predicted)
    _, group_index = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(group_index, kind="stable")
    boundaries = np.flatnonzero(np.diff(group_index[order])) + 1
    agree = pairs = 0.0
    with_pairs = 0
    for rows in np.split(order, boundaries):
        if len(rows) < 2:
            continue
        truth_diff = np.sign(true_scores[rows, None] - true_scores[None, rows])
        predicted_diff = np.sign(predicted[rows, None] - predicted[None, rows])
        upper = np.triu(truth_diff != 0, k=1)
        pairs += upper.sum()
        with_pairs += bool(upper.any())
        agree += np.where(predicted_diff == truth_diff, 1.0, np.where(predicted_diff == 0, 0.5, 0.0))[
            upper
        ].sum()
    return (float(agree / pairs) if pairs else float("nan")), int(pairs), with_pairs


def label_metrics(labels, probabilities, prompt_ids=None, true_scores=None) -> dict[str, float]:
    """Reward metrics of P(preferred) against explicit 0/1 labels, on the rows that have one (not NaN).

    Pairwise accuracy within prompt ranks by ``true_scores`` where given (graded), else by the labels.
    """
    labels, probabilities = _numpy(labels), _numpy(probabilities)
    keep = np.isfinite(labels)
    labels, probabilities = labels[keep], probabilities[keep]
    metrics = {
        "rows": int(keep.sum()),
        "auc": auc(labels, probabilities),
        "mae": mae(labels, probabilities),
        "rmse": rmse(labels, probabilities),
        "r2": r2(labels, probabilities),
        "log_loss": log_loss(labels, probabilities),
        "ece": expected_calibration_error(labels, probabilities),
    }
    if prompt_ids is not None:
        ranking = labels if true_scores is None else _numpy(true_scores)[keep]
        groups = np.asarray(prompt_ids)[keep]
        metrics["pairwise_accuracy"] = pairwise_accuracy(ranking, probabilities, groups)
        metrics["pairs"], metrics["prompts_with_pairs"] = ranked_pairs(ranking, groups)
    return metrics


def best_of_n_win_rate(labels, rewards, groups) -> float:
    """Share of groups (prompts) whose highest-reward row is preferred (label 1): the best-of-N win
    rate, N being each prompt's number of rows. Groups with one row are left out; NaN without any."""
    labels, rewards, groups = _numpy(labels), _numpy(rewards), _numpy(groups)
    order = np.lexsort((-rewards, groups))  # by group, highest reward first
    first = np.ones(len(order), dtype=bool)
    first[1:] = groups[order][1:] != groups[order][:-1]
    sizes = np.bincount(np.unique(groups, return_inverse=True)[1])
    keep = sizes[np.unique(groups[order][first], return_inverse=True)[1]] > 1
    picked = labels[order][first][keep]
    return float(picked.mean()) if picked.size else float("nan")


def feature_bias(rewards, feature, true_preference) -> float:
    """Spearman correlation of the reward with a response feature (length, code blocks) minus that
    of the true preference with it (docs/method.md, "Evaluation"): 0 for a reward that follows the feature
    only as much as quality does. Give the graded true score where there is one: a 0/1 preference
    has a rank correlation attenuated by its ties."""
    from scipy.stats import spearmanr

    rewards, feature, truth = _numpy(rewards), _numpy(feature), _numpy(true_preference)
    if min(np.ptp(rewards), np.ptp(feature), np.ptp(truth)) == 0:  # a constant has no rank correlation
        return float("nan")
    return float(spearmanr(rewards, feature).statistic - spearmanr(truth, feature).statistic)


def pair_metrics(chosen_rewards, rejected_rewards, chosen_lengths=None, rejected_lengths=None) -> dict:
    """Metrics of rewards on chosen/rejected pairs, as RewardBench scores them.

    ``accuracy`` is the share of pairs whose chosen response gets the strictly higher reward (a tie
    counts as wrong). With response lengths, ``prefers_longer`` is the share of pairs of unequal
    length where the reward is higher for the longer response, ``chosen_longer`` the share where the
    chosen one is the longer, and ``length_bias`` their difference: 0 for a reward that likes length
    only as much as the people who chose did.
    """
    chosen, rejected = _numpy(chosen_rewards).astype(np.float64), _numpy(rejected_rewards).astype(np.float64)
    metrics = {
        "pairs": int(chosen.size),
        "accuracy": float(np.mean(chosen > rejected)),
        "mean_margin": float(np.mean(chosen - rejected)),
    }
    if chosen_lengths is not None and rejected_lengths is not None:
        long_c, long_r = _numpy(chosen_lengths), _numpy(rejected_lengths)
        unequal = long_c != long_r
        if unequal.any():
            longer_reward = np.where(long_c > long_r, chosen, rejected)[unequal]
            shorter_reward = np.where(long_c > long_r, rejected, chosen)[unequal]
            metrics["prefers_longer"] = float(np.mean(longer_reward > shorter_reward))
            metrics["chosen_longer"] = float(np.mean(long_c[unequal] > long_r[unequal]))
            metrics["length_bias"] = metrics["prefers_longer"] - metrics["chosen_longer"]
    return metrics


def sibling_pairs(ranks, groups) -> tuple[np.ndarray, np.ndarray]:
    """``(better, worse)`` row indices of every pair of rows in one group (siblings: replies to one
    message) with different finite ranks, ``better`` the lower rank (0 = best)."""
    ranks, groups = _numpy(ranks).astype(np.float64), np.asarray(groups)
    ranked = np.flatnonzero(np.isfinite(ranks))
    _, codes = np.unique(groups[ranked], return_inverse=True)
    order = ranked[np.argsort(codes, kind="stable")]
    better, worse = [], []
    for rows in np.split(order, np.flatnonzero(np.diff(np.sort(codes))) + 1):
        first, second = np.triu_indices(len(rows), k=1)
        a, b = rows[first], rows[second]
        differ = ranks[a] != ranks[b]
        a, b = a[differ], b[differ]
        swap = ranks[a] > ranks[b]
        better.append(np.where(swap, b, a))
        worse.append(np.where(swap, a, b))
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(better) if better else empty, np.concatenate(worse) if worse else empty)


def rank_metrics(ranks, rewards, groups, lengths=None) -> dict[str, float]:
    """How a reward orders ranked siblings (rows of one group with ranks, 0 = best).

    ``sibling_agreement``: the share of sibling pairs with different ranks that the reward orders
    as the rankers did (a tied reward counts one half); ``best_of_n``: the share of groups with
    two or more ranked rows whose highest-reward row holds the group's best rank; with ``lengths``,
    ``length_bias``: how much more often the reward prefers the longer of a pair than the rankers
    did. NaN where there is no pair."""
    ranks, rewards = _numpy(ranks).astype(np.float64), _numpy(rewards).astype(np.float64)
    better, worse = sibling_pairs(ranks, groups)
    agreement = np.where(
        rewards[better] > rewards[worse], 1.0, np.where(rewards[better] == rewards[worse], 0.5, 0.0)
    )
    metrics = {
        "sibling_agreement": float(agreement.mean()) if agreement.size else float("nan"),
        "sibling_pairs": int(agreement.size),
    }
    ranked = np.flatnonzero(np.isfinite(ranks))
    group_of = np.asarray(groups)[ranked]
    _, codes = np.unique(group_of, return_inverse=True)
    best = np.full(codes.max() + 1 if codes.size else 0, np.inf)
    np.minimum.at(best, codes, ranks[ranked])
    metrics["best_of_n"] = best_of_n_win_rate(
        (ranks[ranked] == best[codes]).astype(float), rewards[ranked], codes
    )
    if lengths is not None and better.size:
        lengths = _numpy(lengths)
        found = pair_metrics(rewards[better], rewards[worse], lengths[better], lengths[worse])
        metrics["length_bias"] = found.get("length_bias", float("nan"))
    return metrics


def bootstrap_intervals(metrics_of, groups, resamples: int = 200, confidence: float = 0.95, seed: int = 0):
    """Percentile bootstrap intervals of every metric ``metrics_of(rows, groups) -> dict`` returns,
    resampling whole groups (prompts, or pairs) with replacement so that rows of one prompt stay
    together. ``rows`` is an index into the data; ``groups`` the resampled rows' group labels (each
    drawn group gets a label of its own, so a group drawn twice counts as two).

    Returns ``{metric: (low, high)}``; a metric that is NaN in a resample is left out of it.
    """
    labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    generator = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        chosen = generator.integers(0, len(labels), size=len(labels))
        rows = np.concatenate([members[g] for g in chosen])
        relabelled = np.repeat(np.arange(len(chosen)), [len(members[g]) for g in chosen])
        for name, value in metrics_of(rows, relabelled).items():
            if isinstance(value, float) and np.isfinite(value):
                draws.setdefault(name, []).append(value)
    tail = (1.0 - confidence) / 2.0
    return {
        name: (float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail)))
        for name, values in draws.items()
        if len(values) >= resamples // 2
    }
