"""Best-of-N: the highest-reward response of each prompt's candidates, and, where the candidates
carry labels or graded scores, how good those picks are against random choice and the best pick."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BestOfN:
    """Each prompt's pick.

    Attributes:
        picks: ``(P,)`` row index of the highest-reward candidate of each prompt (ties: first row).
        prompts: ``(P,)`` the prompt id of each pick, in order of first appearance.
        candidates: ``(P,)`` number of candidates of each prompt.
        summary: with quality, the win rates (see :func:`best_of_n`); else None.
    """

    picks: np.ndarray
    prompts: np.ndarray
    candidates: np.ndarray
    summary: dict[str, float] | None


def best_of_n(rewards, prompt_ids, quality=None, resamples: int = 200) -> BestOfN:
    """Pick the highest-reward row of each prompt.

    Args:
        rewards: ``(N,)`` rewards of the candidates.
        prompt_ids: ``(N,)`` the prompt each candidate answers (any hashable labels).
        quality: optional ``(N,)`` labels (0/1) or graded scores of the candidates; NaN where unknown.

    With ``quality``, ``summary`` holds, over prompts with two or more candidates of known quality:
    ``win_rate_vs_random``, the chance that the pick is better than a candidate drawn at random (ties
    count half, so 0.5 is no better than chance); ``win_rate_vs_optimal``, the same against the
    label-optimal pick (0.5 when the pick is always as good as the best, less otherwise);
    ``optimal_rate``, the share of prompts whose pick is as good as the best; and the mean quality
    of the picks, of random choice and of the best pick. ``summary["intervals"]`` holds 95%
    percentile-bootstrap intervals of the rates over ``resamples`` resamples of the prompts (0:
    none), so that a win rate can be told from chance.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    prompts, first, inverse = np.unique(np.asarray(prompt_ids), return_index=True, return_inverse=True)
    if len(rewards) != len(inverse):
        raise ValueError(f"rewards has {len(rewards)} rows but prompt_ids has {len(inverse)}")
    if not np.isfinite(rewards).all():
        raise ValueError("rewards: every reward must be finite")
    order = np.lexsort((np.arange(len(rewards)), -rewards, inverse))  # by prompt, best reward first
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    picks = order[starts]
    candidates = np.bincount(inverse)
    appearance = np.argsort(first, kind="stable")  # prompts in order of first appearance
    picks, candidates, prompts = picks[appearance], candidates[appearance], prompts[appearance]
    summary = None
    if quality is not None:
        summary = _summary(picks, inverse, np.asarray(quality, np.float64), resamples)
    return BestOfN(picks=picks, prompts=prompts, candidates=candidates, summary=summary)


def _summary(picks: np.ndarray, inverse: np.ndarray, quality: np.ndarray, resamples: int) -> dict:
    vs_random, vs_optimal, optimal, picked, random, best = [], [], [], [], [], []
    by_prompt = np.argsort(inverse, kind="stable")
    rows_of = np.split(by_prompt, np.cumsum(np.bincount(inverse))[:-1])
    for pick in picks:
        group = rows_of[inverse[pick]]
        known = quality[group][np.isfinite(quality[group])]
        if len(known) < 2 or not np.isfinite(quality[pick]):
            continue
        mine = quality[pick]
        vs_random.append(np.mean((mine > known) + 0.5 * (mine == known)))
        top = known.max()
        vs_optimal.append(0.5 if mine >= top else 0.0)
        optimal.append(float(mine >= top))
        picked.append(mine)
        random.append(known.mean())
        best.append(top)
    if not picked:
        return {"prompts": 0}
    rates = {"win_rate_vs_random": vs_random, "win_rate_vs_optimal": vs_optimal, "optimal_rate": optimal}
    summary = {
        "prompts": len(picked),
        **{name: float(np.mean(values)) for name, values in rates.items()},
        "quality_of_picks": float(np.mean(picked)),
        "quality_of_random_choice": float(np.mean(random)),
        "quality_of_optimal_picks": float(np.mean(best)),
    }
    if resamples:
        draws = np.random.default_rng(0).integers(0, len(picked), size=(resamples, len(picked)))
        summary["intervals"] = {
            name: tuple(float(q) for q in np.quantile(np.asarray(values)[draws].mean(axis=1), [0.025, 0.975]))
            for name, values in rates.items()
        }
    return summary
