"""Fitting the Bayesian reward head, and comparing SVI with NUTS.

:func:`fit_head_network` (the default) gives every layer of the reward network a linearized
Laplace posterior (:class:`~pyro_irm.models.head_posterior.NetworkPosterior`). The last-layer fits,
by Laplace, SVI (an autoguide) or NUTS, return a :class:`~pyro_irm.models.head_posterior.HeadPosterior`:
draws of the weight and bias, which export to ArviZ (``chain``, ``draw``, ``feature`` dims) for
``az.summary`` (r_hat and ESS of the NUTS chains). Both give per-row reward draws and intervals.
:func:`fit_bayesian_head` fits either for a fitted :class:`~pyro_irm.models.RewardModel` under that
model's own likelihood.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal
from tqdm.auto import tqdm

from pyro_irm.inference.config import HEAD_METHODS, HeadConfig
from pyro_irm.models.head_posterior import (
    HeadPosterior,
    LayerFactors,
    LogLikelihood,
    NetworkPosterior,
    bayesian_head_model,
    layer_inputs_and_gradients,
    linear_layers,
)

# log10 of the prior scales the network posterior's marginal likelihood is searched over.
PRIOR_SCALE_GRID = np.linspace(-3.0, 2.0, 251)


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


def fit_head_network(
    network: torch.nn.Module,
    embeddings: torch.Tensor,
    log_likelihood: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    config: HeadConfig | None = None,
    batch_size: int = 4096,
) -> NetworkPosterior:
    """A linearized Laplace posterior over every linear layer of ``network`` (the reward network).

    Per layer the generalized Gauss-Newton curvature ``sum_n lambda_n (g_n g_n^T) (x) (a_n a_n^T)``
    is Kronecker-factored as ``(sum_n lambda_n g_n g_n^T) (x) (sum_n a_n a_n^T) / N``, where ``a_n``
    is the layer's input, ``g_n`` the gradient of the reward with respect to its output and
    ``lambda_n >= 0`` the curvature of row n's negative log-likelihood in its reward logit. The prior
    is ``N(0, s^2 I)`` on every weight, with ``s`` chosen by the Laplace marginal likelihood
    (MacKay's evidence) over :data:`PRIOR_SCALE_GRID`. Unlike a last-layer posterior, the features
    move too, so the intervals include the error of the learned representation.

    Args:
        embeddings: ``(N, D)`` the training rows.
        log_likelihood: ``(reward (B,), rows (B,) indices) -> (B,)``, each row's log-likelihood
            given its reward logit.
    """
    config = config or HeadConfig()
    layers = linear_layers(network)
    dtype = torch.float64
    inputs = [torch.zeros(m.in_features + 1, m.in_features + 1, dtype=dtype) for m in layers]
    outputs = [torch.zeros(m.out_features, m.out_features, dtype=dtype) for m in layers]
    num_rows = embeddings.shape[0]
    starts = tqdm(
        range(0, num_rows, batch_size),
        desc="Bayesian reward network (curvature)",
        disable=None if config.progress else True,
    )
    for start in starts:
        index = torch.arange(start, min(start + batch_size, num_rows), device=embeddings.device)
        reward, pairs = layer_inputs_and_gradients(network, embeddings[index])
        with torch.enable_grad():
            reward = reward.detach().requires_grad_(True)
            (slope,) = torch.autograd.grad(log_likelihood(reward, index).sum(), reward, create_graph=True)
            (curve,) = torch.autograd.grad(slope.sum(), reward)
        # A mixture's log-likelihood can be convex in places; the Gauss-Newton curvature is not.
        weight = (-curve).clamp_min(0).to(dtype).cpu()
        for i, (layer_input, gradient) in enumerate(pairs):
            layer_input, gradient = layer_input.to(dtype).cpu(), gradient.to(dtype).cpu()
            inputs[i] += layer_input.T @ layer_input
            outputs[i] += (gradient * weight[:, None]).T @ gradient
    factors = []
    for a, b in zip(inputs, outputs, strict=True):
        input_values, input_vectors = torch.linalg.eigh(a / num_rows)
        output_values, output_vectors = torch.linalg.eigh(b)
        factors.append(
            LayerFactors(input_values.clamp_min(0), input_vectors, output_values.clamp_min(0), output_vectors)
        )
    squared = sum(
        float((m.weight.detach().double() ** 2).sum() + (m.bias.detach().double() ** 2).sum()) for m in layers
    )
    scale = _evidence_prior_scale(factors, squared)
    return NetworkPosterior(factors, scale, config.draws, config.seed)


def network_log_evidence(factors: list[LayerFactors], squared_norm: float, prior_scale: float) -> float:
    """The Laplace log marginal likelihood of the prior scale, up to terms that do not depend on it:
    ``-|theta|^2 / (2 s^2) - 1/2 sum log(1 + b_o a_i s^2)`` (the prior's normalizer cancels the
    ``log tau`` part of the posterior's)."""
    tau = 1.0 / prior_scale**2
    spread = sum(
        float(torch.log1p(torch.outer(f.output_values, f.input_values) / tau).sum()) for f in factors
    )
    return -0.5 * tau * squared_norm - 0.5 * spread


def _evidence_prior_scale(factors: list[LayerFactors], squared_norm: float) -> float:
    scales = 10.0**PRIOR_SCALE_GRID
    evidence = [network_log_evidence(factors, squared_norm, s) for s in scales]
    best = int(np.argmax(evidence))
    if best in (0, len(scales) - 1):
        warnings.warn(
            f"the network posterior's prior scale sits at the edge of its search ({scales[best]:g}); "
            "its intervals may be too narrow or too wide",
            RuntimeWarning,
            stacklevel=3,
        )
    return float(scales[best])


def fit_bayesian_head(
    reward_model,
    embeddings: torch.Tensor,
    actions: torch.Tensor,
    context: torch.Tensor | None = None,
    method: str = "network",
    config: HeadConfig | None = None,
    observed: torch.Tensor | None = None,
    users: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> HeadPosterior | NetworkPosterior:
    """A posterior over the reward network of a fitted reward model, given these rows.

    The likelihood is the model's own ``log p(rows | reward)``
    (:meth:`~pyro_irm.models.base.FeedbackModel.log_marginal_given_reward`: every channel, the user
    effects, and the labels when given); every other part of the model stays fixed. ``method``:

    * 'network' (default): a linearized Laplace posterior over every layer of the reward network
      (:func:`fit_head_network`), its prior scale chosen by marginal likelihood;
    * 'laplace': the last layer only, a Gaussian at the fitted layer with the prior centred there;
    * 'svi' (an autoguide) or 'nuts' (small problems): the last layer only, sampled.

    The point reward is the posterior mean of 'network' and 'laplace'. Assign the result to
    ``reward_model.head_posterior`` for :meth:`~pyro_irm.models.RewardModel.reward_interval` and
    for saving with the model.

    Args:
        embeddings: ``(N, D)``; actions: ``(N, K)`` (``(N,)`` for one channel); context ``(N, C)``;
        observed, users, labels: ``(N,)`` where the model takes them.
    """
    if method not in HEAD_METHODS:
        raise ValueError(f"method must be one of {', '.join(HEAD_METHODS)}, got {method!r}")
    model = reward_model.model
    if any(layer.bias is None for layer in model.reward_net.modules() if isinstance(layer, torch.nn.Linear)):
        raise ValueError(
            "a Bayesian head puts a posterior on every weight and bias of the reward network, and the "
            "bias-free linear head (reward_head='linear') has no bias; fit with reward_head='mlp' for "
            "reward intervals"
        )
    device = model.device
    rows = reward_model.prepare_rows(embeddings, actions, context, observed, users, labels)
    last = model.reward_net[-1]
    prior = (last.weight.detach()[0].to(device), float(last.bias.detach()[0]))
    extras = {k: v.to(device) for k, v in rows["extras"].items()}
    tensors = {k: None if v is None else v.to(device) for k, v in rows.items() if k != "extras"}

    def rows_log_likelihood(reward: torch.Tensor, index: torch.Tensor | slice) -> torch.Tensor:
        pick = lambda v: None if v is None else v[index]  # noqa: E731
        return model.log_marginal_given_reward(
            reward,
            *(pick(tensors[k]) for k in ("embeddings", "actions", "context", "observed")),
            **{k: v[index] for k, v in extras.items()},
        )

    def log_likelihood(reward: torch.Tensor) -> torch.Tensor:
        return rows_log_likelihood(reward, slice(None))

    requires_grad = [p.requires_grad for p in model.parameters()]
    try:  # the head's gradient needs the likelihood's, not the fixed model's parameters'
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        if method == "network":
            return fit_head_network(model.reward_net, tensors["embeddings"], rows_log_likelihood, config)
        fitter = {"svi": fit_head_svi, "nuts": fit_head_nuts, "laplace": fit_head_laplace}[method]
        features = reward_model.head_features(rows["embeddings"]).to(device)
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
