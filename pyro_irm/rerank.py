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
        tied: ``(P,)`` number of candidates sharing the highest reward (1: no tie).
    """

    picks: np.ndarray
    prompts: np.ndarray
    candidates: np.ndarray
    summary: dict[str, float] | None
    tied: np.ndarray | None = None


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
    of the picks, of random choice and of the best pick. Where several candidates share the highest
    reward, each figure is their average (a tie split evenly, not broken by row order), and
    ``tied_prompts`` counts those prompts. ``summary["intervals"]`` holds 95%
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
    by_prompt = np.argsort(inverse, kind="stable")
    rows_of = np.split(by_prompt, np.cumsum(np.bincount(inverse))[:-1])
    tops = [rows_of[inverse[pick]][rewards[rows_of[inverse[pick]]] == rewards[pick]] for pick in picks]
    summary = None
    if quality is not None:
        summary = _summary(picks, tops, rows_of, inverse, np.asarray(quality, np.float64), resamples)
    tied = np.array([len(top) for top in tops], dtype=np.int64)
    return BestOfN(picks=picks, prompts=prompts, candidates=candidates, summary=summary, tied=tied)


def _summary(picks, tops, rows_of, inverse, quality: np.ndarray, resamples: int) -> dict:
    """The figures of :func:`best_of_n` over prompts with two or more candidates of known quality;
    ``tops``: each prompt's candidates sharing the highest reward, whose figures are averaged."""
    vs_random, vs_optimal, optimal, picked, random, best = [], [], [], [], [], []
    tied_prompts = 0
    for pick, top_rows in zip(picks, tops, strict=True):
        group = rows_of[inverse[pick]]
        known = quality[group][np.isfinite(quality[group])]
        mine = quality[top_rows]
        if len(known) < 2 or not np.isfinite(mine).all():
            continue
        tied_prompts += len(top_rows) > 1
        top = known.max()
        vs_random.append(np.mean([np.mean((q > known) + 0.5 * (q == known)) for q in mine]))
        vs_optimal.append(float(np.mean(0.5 * (mine >= top))))
        optimal.append(float(np.mean(mine >= top)))
        picked.append(float(mine.mean()))
        random.append(known.mean())
        best.append(top)
    if not picked:
        return {"prompts": 0, "tied_prompts": 0}
    rates = {"win_rate_vs_random": vs_random, "win_rate_vs_optimal": vs_optimal, "optimal_rate": optimal}
    summary = {
        "prompts": len(picked),
        "tied_prompts": tied_prompts,
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
