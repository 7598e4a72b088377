"""Fitting the Bayesian reward head by SVI (an autoguide) or by NUTS, and comparing the two.

Both return a :class:`~pyro_irm.models.bayesian_head.HeadPosterior`: draws of the weight and bias,
from which per-row reward draws and intervals follow, and which export to ArviZ (``chain``, ``draw``,
``feature`` dims) for ``az.summary`` (r_hat and ESS of the NUTS chains).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal

from pyro_irm.models.bayesian_head import HeadPosterior, bayesian_head_model


@dataclass(frozen=True)
class HeadConfig:
    """How the head is fit."""

    prior_scale: float = field(default=1.0, metadata={"help": "prior standard deviation of w and b"})
    svi_steps: int = field(default=3000, metadata={"help": "SVI steps (full batch)"})
    learning_rate: float = field(default=0.02, metadata={"help": "SVI Adam learning rate"})
    draws: int = field(default=1000, metadata={"help": "posterior draws per chain"})
    warmup: int = field(default=500, metadata={"help": "NUTS warm-up steps per chain"})
    chains: int = field(default=2, metadata={"help": "NUTS chains (run one after another)"})
    seed: int = field(default=0, metadata={"help": "seed"})


def _model(features, actions, propensity_logits, config: HeadConfig):
    return partial(
        bayesian_head_model,
        features,
        actions,
        propensity_logits,
        prior_scale=config.prior_scale,
    )


def fit_head_svi(
    features: torch.Tensor,
    actions: torch.Tensor,
    propensity_logits: torch.Tensor | None = None,
    config: HeadConfig | None = None,
) -> HeadPosterior:
    """Full-batch SVI with a multivariate-normal autoguide over (weight, bias)."""
    config = config or HeadConfig()
    pyro.clear_param_store()
    pyro.set_rng_seed(config.seed)
    model = _model(features, actions, propensity_logits, config)
    # Parameters live on the guide module and a plain torch optimizer updates them (no global store).
    with pyro.settings.context(module_local_params=True):
        guide = AutoMultivariateNormal(model)
        guide()  # builds the guide's parameters
        optimizer = torch.optim.Adam(guide.parameters(), lr=config.learning_rate)
        elbo = Trace_ELBO()
        for _ in range(config.svi_steps):
            optimizer.zero_grad()
            elbo.differentiable_loss(model, guide).backward()
            optimizer.step()
        with torch.no_grad():
            samples = [guide() for _ in range(config.draws * config.chains)]
    weight = torch.stack([s["weight"] for s in samples]).reshape(config.chains, config.draws, -1)
    bias = torch.stack([s["bias"] for s in samples]).reshape(config.chains, config.draws)
    return HeadPosterior(weight.detach(), bias.detach(), "svi")


def fit_head_nuts(
    features: torch.Tensor,
    actions: torch.Tensor,
    propensity_logits: torch.Tensor | None = None,
    config: HeadConfig | None = None,
) -> HeadPosterior:
    """NUTS, ``config.chains`` chains run one after another (each from its own seed), so that
    r_hat can compare them."""
    config = config or HeadConfig()
    model = _model(features, actions, propensity_logits, config)
    weights, biases = [], []
    for chain in range(config.chains):
        pyro.set_rng_seed(config.seed + chain)
        mcmc = MCMC(NUTS(model), num_samples=config.draws, warmup_steps=config.warmup, disable_progbar=True)
        mcmc.run()
        samples = mcmc.get_samples()
        weights.append(samples["weight"])
        biases.append(samples["bias"])
    return HeadPosterior(torch.stack(weights), torch.stack(biases), "nuts")


def compare_posteriors(reference: HeadPosterior, approximation: HeadPosterior) -> dict[str, float]:
    """How far ``approximation``'s posterior means are from ``reference``'s, in units of the
    reference posterior standard deviation, and the ratio of their standard deviations."""
    sd = reference.standard_deviations()
    gap = np.abs(approximation.means() - reference.means()) / sd
    ratio = approximation.standard_deviations() / sd
    return {
        "max_mean_gap_in_sd": float(gap.max()),
        "mean_gap_in_sd": float(gap.mean()),
        "min_sd_ratio": float(ratio.min()),
        "max_sd_ratio": float(ratio.max()),
    }
