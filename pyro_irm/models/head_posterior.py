"""A Bayesian last layer for the reward: ``f(e) = h(e) . w + b`` with Gaussian priors on ``w`` and ``b``.

``h`` are fixed features: the penultimate activations of a fitted reward network. The prior sits
where the fit put the layer (``w ~ N(w_hat, s^2 I)``, ``b ~ N(b_hat, s^2)``), so the posterior
says how far the data let the layer move from the point fit, not how far it is from zero. The
likelihood is the fitted generative model's own (every channel, user effect and label; the groups
summed out), handed in as a function of the reward logits. The model is small enough for NUTS,
which makes it the reference that SVI's posterior is checked against.

:class:`NetworkPosterior` is the other kind: a linearized Laplace posterior over every linear layer
of the reward network, Kronecker-factored, so that the features move too (the default head).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyro_irm.models.networks import full_precision

# ``log p(data of row i | reward_i)`` for reward logits ``(N,)``: ``(N,)``.
LogLikelihood = Callable[[torch.Tensor], torch.Tensor]


def log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(log_p))`` for ``log_p < 0``, stable at both ends."""
    return torch.where(log_p > -0.6931, torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p)))


def bayesian_head_model(
    features: torch.Tensor,
    log_likelihood: LogLikelihood,
    prior_weight: torch.Tensor,
    prior_bias: torch.Tensor | float = 0.0,
    prior_scale: float = 1.0,
) -> torch.Tensor:
    """Pyro model: ``weight ~ N(prior_weight, s^2 I)``, ``bias ~ N(prior_bias, s^2)``, and the rows'
    log-likelihood at ``reward = features @ weight + bias`` as a factor.

    Args:
        features: ``(N, H)`` fixed features ``h(e)``.
        log_likelihood: ``(N,) -> (N,)``, the data's log-likelihood per row given the reward logits.
        prior_weight: ``(H,)`` prior mean of the weight (the point fit's); prior_bias: its bias.
        prior_scale: the prior's standard deviation ``s``.

    Returns the ``(N,)`` reward logits.
    """
    loc = torch.as_tensor(prior_weight, dtype=features.dtype, device=features.device)
    bias_loc = torch.as_tensor(prior_bias, dtype=features.dtype, device=features.device)
    scale = torch.full_like(bias_loc, prior_scale)
    weight = pyro.sample("weight", dist.Normal(loc, scale).to_event(1))
    bias = pyro.sample("bias", dist.Normal(bias_loc, scale))
    reward = features @ weight + bias
    pyro.deterministic("reward", reward)
    with pyro.plate("rows", features.shape[0], device=features.device):
        pyro.factor("log_likelihood", log_likelihood(reward))
    return reward


def seed_paper_likelihood(
    actions: torch.Tensor, propensity_logits: torch.Tensor | None = None
) -> LogLikelihood:
    """The seed paper's one-channel likelihood in closed form: ``P(y = 1) = sigmoid(f) sigmoid(g)``
    with fixed propensity logits ``g`` ``(N,)``; a logistic regression of ``actions`` without them.
    (The fitted model's own likelihood is what :func:`~pyro_irm.inference.fit_bayesian_head` uses;
    this form is for problems given as logits, and is tested equal to the model's.)"""

    def log_likelihood(reward: torch.Tensor) -> torch.Tensor:
        if propensity_logits is None:
            logits = reward
        else:
            log_act = F.logsigmoid(reward) + F.logsigmoid(propensity_logits.to(reward.dtype))
            logits = log_act - log1mexp(log_act)
        return dist.Bernoulli(logits=logits).log_prob(actions.to(reward.dtype))

    return log_likelihood


@dataclass
class HeadPosterior:
    """Posterior draws: ``weight`` ``(chains, draws, H)`` and ``bias`` ``(chains, draws)``."""

    weight: torch.Tensor
    bias: torch.Tensor
    method: str

    def reward_draws(self, features: torch.Tensor) -> torch.Tensor:
        """``(chains * draws, N)`` reward logits of rows with features ``(N, H)``."""
        weight = self.weight.reshape(-1, self.weight.shape[-1]).to(features.dtype)
        return weight @ features.T + self.bias.reshape(-1, 1).to(features.dtype)

    def sample_rewards(
        self, network: torch.nn.Module, embeddings: torch.Tensor, draws: int | None = None
    ) -> torch.Tensor:
        """``(chains, draws, N)`` reward logits of rows ``(N, D)`` under the network's fixed body;
        ``draws`` thins each chain evenly to at most that many."""
        body = torch.nn.Sequential(*list(network)[:-1])
        with torch.no_grad():
            features = body(embeddings)
        chains, total = self.bias.shape
        keep = torch.linspace(0, total - 1, min(total, draws or total)).round().long()
        thinned = HeadPosterior(self.weight[:, keep], self.bias[:, keep], self.method)
        return thinned.reward_draws(features).reshape(chains, len(keep), -1)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The draws by name, for saving."""
        return {"head.weight": self.weight, "head.bias": self.bias}

    def meta(self) -> dict:
        return {}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict) -> HeadPosterior:
        return cls(tensors["head.weight"], tensors["head.bias"], meta["method"])

    def means(self) -> np.ndarray:
        """``(H + 1,)`` posterior means of the weight and then the bias."""
        return np.append(self.weight.mean(dim=(0, 1)).numpy(), self.bias.mean().item())

    def standard_deviations(self) -> np.ndarray:
        flat = torch.cat([self.weight.reshape(-1, self.weight.shape[-1]), self.bias.reshape(-1, 1)], dim=1)
        return flat.std(dim=0).numpy()


@dataclass
class LayerFactors:
    """One linear layer's Kronecker-factored posterior precision ``B (x) A + tau I``, kept as the
    eigen-decompositions of ``A`` (over the layer's inputs and a 1 for the bias, ``(I + 1,)``
    values and ``(I + 1, I + 1)`` vectors) and ``B`` (over its outputs, ``(O,)`` and ``(O, O)``)."""

    input_values: torch.Tensor
    input_vectors: torch.Tensor
    output_values: torch.Tensor
    output_vectors: torch.Tensor

    def inverse_precision(self, tau: float) -> torch.Tensor:
        """``(O, I + 1)``: one over the precision's eigenvalues ``b_o a_i + tau``."""
        return 1.0 / (torch.outer(self.output_values, self.input_values) + tau)


def linear_layers(network: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in network.modules() if isinstance(m, torch.nn.Linear)]


def layer_inputs_and_gradients(
    network: torch.nn.Module, inputs: torch.Tensor
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The network's output ``(N,)`` and, per linear layer, its input with a column of ones
    ``(N, I + 1)`` and the gradient of each row's output with respect to the layer's output
    ``(N, O)``: the two factors of each row's Jacobian ``d f / d W = g a^T``."""
    layers = linear_layers(network)
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep(module, args, output):
        captured.append((args[0], output))

    handles = [layer.register_forward_hook(keep) for layer in layers]
    training = network.training
    try:
        network.eval()
        with torch.enable_grad():
            # Gradients flow through the rows' own activations only (no parameter gradients).
            rows = inputs.detach().requires_grad_(True)
            output = full_precision(network(rows)).squeeze(-1)
            gradients = torch.autograd.grad(output.sum(), [out for _, out in captured])
    finally:
        network.train(training)
        for handle in handles:
            handle.remove()
    pairs = []
    for (layer_input, _), gradient in zip(captured, gradients, strict=True):
        layer_input = layer_input.detach()
        ones = torch.ones(layer_input.shape[0], 1, dtype=layer_input.dtype, device=layer_input.device)
        pairs.append((torch.cat([layer_input, ones], dim=1), gradient.detach()))
    return output.detach(), pairs


@dataclass
class NetworkPosterior:
    """A linearized Laplace posterior over every linear layer of the reward network.

    Each layer's weights (and bias) are Gaussian around the fitted ones, with the Kronecker-factored
    precision :class:`LayerFactors` (the likelihood's curvature, layers independent) plus the prior's
    ``tau = 1 / prior_scale^2``. The reward is linearized in the weights, ``f(e) + J(e) delta``, so
    each row's posterior is Gaussian: its mean is the point reward and its variance
    ``sum_layers sum_oi (Q_B^T g)_o^2 (Q_A^T a)_i^2 / (b_o a_i + tau)`` is exact given the factors.
    Draws are joint over rows (one weight perturbation per draw), regenerated from ``seed``.
    """

    layers: list[LayerFactors]
    prior_scale: float
    draws: int
    seed: int
    method: str = "network"

    @property
    def tau(self) -> float:
        return 1.0 / self.prior_scale**2

    def _projected(self, network: torch.nn.Module, embeddings: torch.Tensor):
        point, pairs = layer_inputs_and_gradients(network, embeddings)
        projected = []
        for factors, (inputs, gradients) in zip(self.layers, pairs, strict=True):
            dtype = factors.input_vectors.dtype
            device = inputs.device
            projected.append(
                (
                    gradients.to(dtype) @ factors.output_vectors.to(device),
                    inputs.to(dtype) @ factors.input_vectors.to(device),
                )
            )
        return point, projected

    def reward_moments(
        self, network: torch.nn.Module, embeddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's posterior mean (the point reward) and standard deviation: ``(N,)``, ``(N,)``."""
        point, projected = self._projected(network, embeddings)
        variance = torch.zeros_like(point, dtype=torch.float64)
        for factors, (gradients, inputs) in zip(self.layers, projected, strict=True):
            inverse = factors.inverse_precision(self.tau).to(gradients.device)
            variance = variance + ((gradients**2 @ inverse) * inputs**2).sum(dim=1)
        return point, variance.sqrt().to(point.dtype)

    def sample_rewards(
        self, network: torch.nn.Module, embeddings: torch.Tensor, draws: int | None = None
    ) -> torch.Tensor:
        """``(1, draws, N)`` joint posterior draws of the rows' reward logits (the first ``draws``
        of the posterior's, default all). They depend on ``seed`` only, so rows scored in separate
        calls share them."""
        point, projected = self._projected(network, embeddings)
        generator = torch.Generator().manual_seed(self.seed)
        scales = [f.inverse_precision(self.tau).sqrt() for f in self.layers]
        total = self.draws if draws is None else min(draws, self.draws)
        chunks = []
        for start in range(0, total, _DRAW_CHUNK):
            size = min(_DRAW_CHUNK, total - start)
            shift = torch.zeros(size, point.shape[0], dtype=torch.float64, device=point.device)
            for scale, (gradients, inputs) in zip(scales, projected, strict=True):
                # delta_d = Q_B (noise_d * scale) Q_A^T; row n moves by g_n^T delta_d a_n.
                noise = torch.randn(size, *scale.shape, generator=generator, dtype=scale.dtype) * scale
                moved = torch.matmul(gradients, noise.to(gradients.device))  # (size, N, I + 1)
                shift = shift + (moved * inputs).sum(dim=-1)
            chunks.append(shift)
        return (point[None] + torch.cat(chunks).to(point.dtype))[None]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The factors by name, for saving."""
        out = {}
        for i, f in enumerate(self.layers):
            out.update(
                {
                    f"head.layer{i}.input_values": f.input_values,
                    f"head.layer{i}.input_vectors": f.input_vectors,
                    f"head.layer{i}.output_values": f.output_values,
                    f"head.layer{i}.output_vectors": f.output_vectors,
                }
            )
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict) -> NetworkPosterior:
        layers = []
        for i in range(meta["layers"]):
            layers.append(LayerFactors(*(tensors[f"head.layer{i}.{name}"] for name in _FACTOR_NAMES)))
        return cls(layers, meta["prior_scale"], meta["draws"], meta["seed"])

    def meta(self) -> dict:
        return {
            "layers": len(self.layers),
            "prior_scale": self.prior_scale,
            "draws": self.draws,
            "seed": self.seed,
        }


_DRAW_CHUNK = 16  # draws computed at once: memory (chunk, N, inputs)
_FACTOR_NAMES = ("input_values", "input_vectors", "output_values", "output_vectors")
