"""Fitting the Bayesian reward head by SVI (an autoguide) or by NUTS, and comparing the two.

Both return a :class:`~pyro_irm.models.bayesian_head.HeadPosterior`: draws of the weight and bias,
from which per-row reward draws and intervals follow, and which export to ArviZ (``chain``, ``draw``,
``feature`` dims) for ``az.summary`` (r_hat and ESS of the NUTS chains).
:func:`fit_bayesian_head` fits the head of a fitted :class:`~pyro_irm.models.RewardModel` under
that model's own likelihood.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal
from tqdm.auto import tqdm

from pyro_irm.inference.config import HEAD_METHODS, HeadConfig
from pyro_irm.models.bayesian_head import HeadPosterior, LogLikelihood, bayesian_head_model


def _model(features, log_likelihood, prior, config: HeadConfig):
    weight, bias = prior if prior is not None else (torch.zeros(features.shape[-1]), 0.0)
    return partial(
        bayesian_head_model, features, log_likelihood, weight, bias, prior_scale=config.prior_scale
    )


def fit_head_svi(
    features: torch.Tensor,
    log_likelihood: LogLikelihood,
    prior: tuple[torch.Tensor, float] | None = None,
    config: HeadConfig | None = None,
) -> HeadPosterior:
    """Full-batch SVI with a multivariate-normal autoguide over (weight, bias), started at the prior
    mean. ``prior`` is the ``(weight (H,), bias)`` the prior is centred on (default zeros)."""
    config = config or HeadConfig()
    pyro.clear_param_store()
    pyro.set_rng_seed(config.seed)
    model = _model(features, log_likelihood, prior, config)
    # Parameters live on the guide module and a plain torch optimizer updates them (no global store).
    with pyro.settings.context(module_local_params=True):
        guide = AutoMultivariateNormal(model, init_loc_fn=pyro.infer.autoguide.init_to_mean)
        guide()  # builds the guide's parameters
        optimizer = torch.optim.Adam(guide.parameters(), lr=config.learning_rate)
        elbo = Trace_ELBO()
        steps = tqdm(
            range(config.svi_steps), desc="Bayesian head (SVI)", disable=None if config.progress else True
        )
        for _ in steps:
            optimizer.zero_grad()
            loss = elbo.differentiable_loss(model, guide)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            samples = [guide() for _ in range(config.draws * config.chains)]
    weight = torch.stack([s["weight"] for s in samples]).reshape(config.chains, config.draws, -1)
    bias = torch.stack([s["bias"] for s in samples]).reshape(config.chains, config.draws)
    return HeadPosterior(weight.detach(), bias.detach(), "svi")


def fit_head_nuts(
    features: torch.Tensor,
    log_likelihood: LogLikelihood,
    prior: tuple[torch.Tensor, float] | None = None,
    config: HeadConfig | None = None,
) -> HeadPosterior:
    """NUTS, ``config.chains`` chains run one after another (each from its own seed), so that
    r_hat can compare them."""
    config = config or HeadConfig()
    model = _model(features, log_likelihood, prior, config)
    weights, biases = [], []
    for chain in range(config.chains):
        pyro.set_rng_seed(config.seed + chain)
        mcmc = MCMC(
            NUTS(model),
            num_samples=config.draws,
            warmup_steps=config.warmup,
            disable_progbar=not config.progress,
        )
        mcmc.run()
        samples = mcmc.get_samples()
        weights.append(samples["weight"])
        biases.append(samples["bias"])
    return HeadPosterior(torch.stack(weights), torch.stack(biases), "nuts")


def fit_head_laplace(
    features: torch.Tensor,
    log_likelihood: LogLikelihood,
    prior: tuple[torch.Tensor, float] | None = None,
    config: HeadConfig | None = None,
) -> HeadPosterior:
    """The Laplace approximation at the prior mean (the point fit's layer): a Gaussian whose mean is
    the fitted layer and whose precision is the curvature of the negative log-likelihood there plus
    the prior's, ``(H + I / s^2)``. The point estimate is the posterior mean by construction."""
    config = config or HeadConfig()
    weight, bias = prior if prior is not None else (torch.zeros(features.shape[-1]), 0.0)
    dtype = torch.float64
    centre = torch.cat([weight.to(dtype).reshape(-1), torch.tensor([float(bias)], dtype=dtype)])
    features64 = features.to(dtype)

    def negative_log_likelihood(parameters: torch.Tensor) -> torch.Tensor:
        reward = features64 @ parameters[:-1] + parameters[-1]
        return -log_likelihood(reward.to(features.dtype)).to(dtype).sum()

    hessian = torch.autograd.functional.hessian(negative_log_likelihood, centre)
    precision = hessian + torch.eye(len(centre), dtype=dtype) / config.prior_scale**2
    # Symmetrize and make sure the precision is positive definite (the curvature of a fit that
    # stopped early can be indefinite in a few directions; the prior keeps those finite).
    precision = 0.5 * (precision + precision.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(precision)
    eigenvalues = eigenvalues.clamp_min(1.0 / config.prior_scale**2)
    covariance = eigenvectors @ torch.diag(1.0 / eigenvalues) @ eigenvectors.T
    generator = torch.Generator().manual_seed(config.seed)
    chol = torch.linalg.cholesky(0.5 * (covariance + covariance.T))
    noise = torch.randn(config.chains * config.draws, len(centre), generator=generator, dtype=dtype)
    draws = (centre + noise @ chol.T).to(torch.float32)
    return HeadPosterior(
        draws[:, :-1].reshape(config.chains, config.draws, -1),
        draws[:, -1].reshape(config.chains, config.draws),
        "laplace",
    )


def fit_bayesian_head(
    reward_model,
    embeddings: torch.Tensor,
    actions: torch.Tensor,
    context: torch.Tensor | None = None,
    method: str = "laplace",
    config: HeadConfig | None = None,
    observed: torch.Tensor | None = None,
    users: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> HeadPosterior:
    """A posterior over the last layer of a fitted reward model, on these rows.

    The features below the last layer and every other part of the model stay fixed; the prior is
    centred on the fitted layer; the likelihood is the model's own ``log p(rows | reward)``
    (:meth:`~pyro_irm.models.base.FeedbackModel.log_marginal_given_reward`: every channel, the user
    effects, and the labels when given). ``method`` is 'laplace' (a Gaussian at the fitted layer,
    from the curvature there: the point estimate stays the mean), 'svi' (an autoguide) or 'nuts'
    (small problems). Returns the :class:`HeadPosterior`; assign it to ``reward_model.head_posterior``
    for :meth:`~pyro_irm.models.RewardModel.reward_interval` and for saving with the model.

    Args:
        embeddings: ``(N, D)``; actions: ``(N, K)`` (``(N,)`` for one channel); context ``(N, C)``;
        observed, users, labels: ``(N,)`` where the model takes them.
    """
    if method not in HEAD_METHODS:
        raise ValueError(f"method must be one of {', '.join(HEAD_METHODS)}, got {method!r}")
    model = reward_model.model
    device = model.device
    rows = reward_model.prepare_rows(embeddings, actions, context, observed, users, labels)
    features = reward_model.head_features(rows["embeddings"]).to(device)
    last = model.reward_net[-1]
    prior = (last.weight.detach()[0].to(device), float(last.bias.detach()[0]))
    extras = {k: v.to(device) for k, v in rows["extras"].items()}
    tensors = {k: None if v is None else v.to(device) for k, v in rows.items() if k != "extras"}

    def log_likelihood(reward: torch.Tensor) -> torch.Tensor:
        return model.log_marginal_given_reward(
            reward,
            tensors["embeddings"],
            tensors["actions"],
            tensors["context"],
            tensors["observed"],
            **extras,
        )

    fitter = {"svi": fit_head_svi, "nuts": fit_head_nuts, "laplace": fit_head_laplace}[method]
    requires_grad = [p.requires_grad for p in model.parameters()]
    try:  # the head's gradient needs the likelihood's, not the fixed model's parameters'
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return fitter(features, log_likelihood, prior, config)
    finally:
        for parameter, flag in zip(model.parameters(), requires_grad, strict=True):
            parameter.requires_grad_(flag)


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
