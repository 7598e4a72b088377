"""Each loss against its defining identity (docs/method.md)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_irm.estimators.losses import (
    doubly_robust_loss,
    implicit_ips_loss,
    label_loss,
    noise_corrected_loss,
    observed_ips_loss,
    pu_risks,
    ubpr_loss,
)

DOUBLE = torch.float64


def _logits(n=500, seed=0):
    return 3 * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=DOUBLE)


def test_label_loss_is_binary_cross_entropy():
    logits = _logits(20)
    expected = -torch.log(torch.sigmoid(logits))
    torch.testing.assert_close(label_loss(logits, 1.0), expected)
    torch.testing.assert_close(
        label_loss(logits, torch.zeros(20, dtype=DOUBLE)), -torch.log(torch.sigmoid(-logits))
    )


@pytest.mark.parametrize("eps1, eps0", [(0.2, 0.1), (0.1, 0.2), (0.0, 0.3), (0.45, 0.45)])
def test_noise_corrected_loss_equals_the_clean_loss_in_expectation_over_flips(eps1, eps0):
    logits = _logits()
    ones, zeros = torch.ones_like(logits), torch.zeros_like(logits)
    corrected_one = noise_corrected_loss(logits, ones, eps1, eps0)
    corrected_zero = noise_corrected_loss(logits, zeros, eps1, eps0)
    # r = 1 is observed as 0 with probability eps1; r = 0 as 1 with probability eps0.
    clean_one = (1 - eps1) * corrected_one + eps1 * corrected_zero
    clean_zero = eps0 * corrected_one + (1 - eps0) * corrected_zero
    torch.testing.assert_close(clean_one, label_loss(logits, 1.0))
    torch.testing.assert_close(clean_zero, label_loss(logits, 0.0))
    # And the plain loss of the noisy label is not unbiased: the identity above can fail.
    noisy_one = (1 - eps1) * label_loss(logits, 1.0) + eps1 * label_loss(logits, 0.0)
    if eps1 > 0:
        assert not torch.allclose(noisy_one, label_loss(logits, 1.0))


def test_noise_corrected_loss_without_noise_is_the_loss():
    logits = _logits(50)
    labels = (torch.rand(50, dtype=DOUBLE) < 0.5).to(DOUBLE)
    torch.testing.assert_close(noise_corrected_loss(logits, labels, 0.0, 0.0), label_loss(logits, labels))


def test_noise_corrected_loss_refuses_uninformative_rates():
    with pytest.raises(ValueError, match="below 1"):
        noise_corrected_loss(_logits(3), torch.ones(3, dtype=DOUBLE), 0.6, 0.4)


def _draws(probability, replicates, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(probability.expand(replicates, -1), generator=generator)


def test_observed_ips_with_true_propensities_is_unbiased_for_the_full_data_risk():
    logits = _logits(400, 1)
    generator = torch.Generator().manual_seed(2)
    labels = torch.bernoulli(torch.full((400,), 0.4, dtype=DOUBLE), generator=generator)
    propensity = 0.1 + 0.8 * torch.rand(400, generator=generator, dtype=DOUBLE)
    per_row = label_loss(logits, labels)
    full_risk = per_row.mean()
    observed = _draws(propensity, 4000, 3)  # (replicates, rows)
    estimates = observed_ips_loss(per_row, observed, propensity).mean(dim=1)
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - full_risk) < 4 * standard_error
    # The loss of the observed rows alone is biased whenever propensity and loss are related.
    related = torch.sigmoid(-logits)  # rows with a high loss of 1 are rarely observed
    observed = _draws(related, 4000, 4)
    naive = ((observed * per_row).sum(1) / observed.sum(1)).mean()
    ips = observed_ips_loss(per_row, observed, related.clamp_min(1e-3)).mean(dim=1)
    assert abs(naive - full_risk) > 10 * ips.std() / math.sqrt(len(ips))


def test_implicit_ips_loss_is_the_loss_of_the_true_preference_in_expectation():
    logits = _logits(300, 5)
    generator = torch.Generator().manual_seed(6)
    preference = torch.bernoulli(torch.full((300,), 0.5, dtype=DOUBLE), generator=generator)
    propensity = 0.2 + 0.8 * torch.rand(300, generator=generator, dtype=DOUBLE)
    # Exact expectation over o ~ Bernoulli(p), y = r * o.
    acted = implicit_ips_loss(logits, preference, propensity)
    silent = implicit_ips_loss(logits, torch.zeros_like(preference), propensity)
    expectation = propensity * acted + (1 - propensity) * silent
    torch.testing.assert_close(expectation, label_loss(logits, preference))
    # The naive loss of y is not: silent positives count as negatives.
    naive = propensity * label_loss(logits, preference) + (1 - propensity) * label_loss(logits, 0.0)
    assert not torch.allclose(naive, label_loss(logits, preference))


def test_doubly_robust_is_unbiased_when_either_model_is_right():
    logits = _logits(300, 7)
    generator = torch.Generator().manual_seed(8)
    labels = torch.bernoulli(torch.full((300,), 0.3, dtype=DOUBLE), generator=generator)
    per_row = label_loss(logits, labels)
    true_engagement = 0.2 + 0.7 * torch.rand(300, generator=generator, dtype=DOUBLE)
    wrong_propensity = (true_engagement * 0.5 + 0.4).clamp(max=1.0)
    wrong_imputation = per_row + 1.0

    def expectation(imputed, propensity):  # exact, over o ~ Bernoulli(true_engagement)
        observed = doubly_robust_loss(per_row, imputed, torch.ones(300, dtype=DOUBLE), propensity)
        missing = doubly_robust_loss(per_row, imputed, torch.zeros(300, dtype=DOUBLE), propensity)
        return (true_engagement * observed + (1 - true_engagement) * missing).mean()

    full_risk = per_row.mean()
    torch.testing.assert_close(expectation(wrong_imputation, true_engagement), full_risk)
    torch.testing.assert_close(expectation(per_row, wrong_propensity), full_risk)
    assert abs(expectation(wrong_imputation, wrong_propensity) - full_risk) > 0.05


@settings(max_examples=200, deadline=None)
@given(
    logits=st.lists(st.floats(-30, 30), min_size=2, max_size=40),
    bits=st.lists(st.booleans(), min_size=2, max_size=40),
    prior=st.floats(0.01, 0.99),
)
def test_nnpu_risk_is_never_negative(logits, bits, prior):
    n = min(len(logits), len(bits))
    positive, negative = pu_risks(
        torch.tensor(logits[:n], dtype=DOUBLE), torch.tensor(bits[:n], dtype=DOUBLE), prior
    )
    assert positive + negative.clamp_min(0) >= 0


def test_upu_can_go_negative_where_nnpu_cannot():
    # A model that calls every labelled positive sure-positive and every row sure-negative.
    logits = torch.tensor([20.0, 20.0, -20.0, -20.0], dtype=DOUBLE)
    actions = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=DOUBLE)
    positive, negative = pu_risks(logits, actions, 0.9)
    assert positive + negative < 0


def test_upu_is_unbiased_for_the_true_risk_under_random_labelling():
    generator = torch.Generator().manual_seed(9)
    n, prior, labelling = 2000, 0.4, 0.3
    logits = _logits(n, 10)
    preference = torch.bernoulli(torch.full((n,), prior, dtype=DOUBLE), generator=generator)
    true_risk = label_loss(logits, preference).mean()
    estimates = []
    for _ in range(400):
        actions = preference * torch.bernoulli(torch.full((n,), labelling, dtype=DOUBLE), generator=generator)
        estimates.append(sum(pu_risks(logits, actions, preference.mean().item())))
    estimates = torch.stack(estimates)
    assert abs(estimates.mean() - true_risk) < 4 * estimates.std() / math.sqrt(len(estimates)) + 2e-3


def test_ubpr_weight_is_preferred_over_not_preferred_in_expectation():
    logits, partner_logits = _logits(200, 11), _logits(200, 12)
    generator = torch.Generator().manual_seed(13)
    r_i = torch.bernoulli(torch.full((200,), 0.5, dtype=DOUBLE), generator=generator)
    r_j = torch.bernoulli(torch.full((200,), 0.5, dtype=DOUBLE), generator=generator)
    p_i = 0.2 + 0.8 * torch.rand(200, generator=generator, dtype=DOUBLE)
    p_j = 0.2 + 0.8 * torch.rand(200, generator=generator, dtype=DOUBLE)
    expectation = torch.zeros(200, dtype=DOUBLE)
    for o_i in (0.0, 1.0):
        for o_j in (0.0, 1.0):
            chance = (p_i if o_i else 1 - p_i) * (p_j if o_j else 1 - p_j)
            expectation += chance * ubpr_loss(logits, partner_logits, r_i * o_i, r_j * o_j, p_i, p_j)
    ideal = -(r_i * (1 - r_j)) * torch.nn.functional.logsigmoid(logits - partner_logits)
    torch.testing.assert_close(expectation, ideal)
