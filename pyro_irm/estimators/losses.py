"""The per-row losses of every loss-based estimator, each written once (docs/method.md).

Notation: ``logits`` are the reward ``f(e)``; ``l(t) = BCE(t, sigmoid(f))`` is the loss of label t;
``y`` is the observed action or feedback value, ``o`` the observation indicator (observational
logs only), ``p`` a propensity ``P(o = 1 | row)``. Every function returns per-row terms ``(B,)``;
the estimator averages them. The identities these losses are built on are tested one by one in
``tests/models/test_losses.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_loss(logits: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    """``l(t) = -t log sigmoid(f) - (1 - t) log sigmoid(-f)``: ``(B,)``; t may be soft."""
    target = torch.as_tensor(target, dtype=logits.dtype, device=logits.device).expand_as(logits)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none")


def noise_corrected_loss(logits: torch.Tensor, noisy: torch.Tensor, eps1: float, eps0: float) -> torch.Tensor:
    """CausalRM's surrogate for class-conditional label noise (Natarajan et al. 2013).

    With ``eps1 = P(y = 0 | r = 1)`` and ``eps0 = P(y = 1 | r = 0)``::

        l~(y) = ((1 - eps_{1-y}) l(y) - eps_y l(1 - y)) / (1 - eps1 - eps0)

    where ``eps_1 = eps1`` and ``eps_0 = eps0``. In expectation over the flips it equals the loss of
    the clean label: ``E[l~(y) | r] = l(r)``. It can be negative, which is the price of unbiasedness.
    """
    if eps1 + eps0 >= 1.0:
        raise ValueError(f"eps1 + eps0 must be below 1, got {eps1} + {eps0}")
    noisy = noisy.to(logits.dtype)
    loss_one, loss_zero = label_loss(logits, 1.0), label_loss(logits, 0.0)
    corrected_one = (1.0 - eps0) * loss_one - eps1 * loss_zero
    corrected_zero = (1.0 - eps1) * loss_zero - eps0 * loss_one
    return (noisy * corrected_one + (1.0 - noisy) * corrected_zero) / (1.0 - eps1 - eps0)


def implicit_ips_loss(logits: torch.Tensor, actions: torch.Tensor, propensity: torch.Tensor) -> torch.Tensor:
    """The unbiased pointwise loss for implicit feedback ``y = r * o`` (Saito et al. 2020, Rel-MF).

    ``(y / p) l(1) + (1 - y / p) l(0)``. Since ``E[y / p | r] = r`` when ``p = P(o = 1 | row)`` and o
    is independent of r given the row, its expectation is the loss of the true preference.
    """
    weight = actions.to(logits.dtype) / propensity
    return weight * label_loss(logits, 1.0) + (1.0 - weight) * label_loss(logits, 0.0)


def observed_ips_loss(
    per_row_loss: torch.Tensor, observed: torch.Tensor, propensity: torch.Tensor
) -> torch.Tensor:
    """Inverse-propensity weighting of an observed-rows loss: ``o / p * loss``.

    Its mean over rows is unbiased for the mean loss over every row (observed or not) when ``p`` is
    the true ``P(o = 1 | row)``.
    """
    return observed.to(per_row_loss.dtype) / propensity * per_row_loss


def doubly_robust_loss(
    per_row_loss: torch.Tensor,
    imputed_loss: torch.Tensor,
    observed: torch.Tensor,
    propensity: torch.Tensor,
) -> torch.Tensor:
    """Doubly robust risk terms: ``e + o / p * (loss - e)`` with ``e`` the imputed loss of the row.

    Unbiased for the full-data mean loss when either the propensity or the imputation is right.
    """
    return imputed_loss + observed.to(per_row_loss.dtype) / propensity * (per_row_loss - imputed_loss)


def pu_risks(
    logits: torch.Tensor, actions: torch.Tensor, class_prior: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two parts of the PU risk, with the y = 1 rows as the labelled positives and every row as
    the unlabelled sample (du Plessis et al. 2015; Kiryo et al. 2017)::

        positive = pi * E_P[l(1)]
        negative = E_U[l(0)] - pi * E_P[l(0)]

    ``positive + negative`` is the unbiased PU risk (uPU): equal in expectation to the risk with
    true labels when the labelled positives are a uniform sample of the positives. nnPU clamps the
    negative part at zero. Returns two scalars.
    """
    positives = actions.to(logits.dtype)
    num_positive = positives.sum().clamp_min(1.0)
    mean_positive_one = (positives * label_loss(logits, 1.0)).sum() / num_positive
    mean_positive_zero = (positives * label_loss(logits, 0.0)).sum() / num_positive
    mean_unlabelled_zero = label_loss(logits, 0.0).mean()
    return class_prior * mean_positive_one, mean_unlabelled_zero - class_prior * mean_positive_zero


def ubpr_loss(
    logits: torch.Tensor,
    partner_logits: torch.Tensor,
    actions: torch.Tensor,
    partner_actions: torch.Tensor,
    propensity: torch.Tensor,
    partner_propensity: torch.Tensor,
) -> torch.Tensor:
    """Unbiased Bayesian personalized ranking (Saito 2020) for pairs of rows of one prompt.

    ``-(y_i / p_i) (1 - y_j / p_j) log sigmoid(f_i - f_j)``: in expectation over the actions the
    weight is ``r_i (1 - r_j)``, the pairs whose first row is preferred and second is not.
    """
    weight = (
        actions.to(logits.dtype) / propensity * (1.0 - partner_actions.to(logits.dtype) / partner_propensity)
    )
    return -weight * F.logsigmoid(logits - partner_logits)
