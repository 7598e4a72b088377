"""Emission components: how each observed channel arises from preference r and engagement o.

A channel component is an ``nn.Module`` with ``spec`` (a :class:`~pyro_irm.channels.ChannelSpec`)
and ``distribution(preference, engagement, features) -> Distribution`` over the channel's value as
the model sees it (``transform`` of the logged value). ``preference`` and ``engagement`` are 0/1
tensors that broadcast against the rows (enumerated values have shape ``(2, 1)`` and
``(2, 1, 1)``); ``features`` is ``(B, F)`` or None. Writing a new kind of channel means writing one
such class and handing it to :class:`~pyro_irm.models.implicit.ImplicitFeedbackModel`.

Polarity is built into the parameterization, so the declared sign holds whatever the fit does:
``r_signed = r`` for a positive channel and ``1 - r`` for a negative one, and every effect of
``r_signed`` passes through ``softplus`` (never negative). That fixes what r means (no label
switching) and makes a negative action a definitive negative.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints
from torch.distributions.transforms import AffineTransform

from pyro_irm.channels import ChannelSpec
from pyro_irm.models.components import class_path, constructor_settings
from pyro_irm.models.networks import full_precision

# Logit of a binary channel firing on a silent row (o = 0): about 1e-13, not exactly 0, so a
# mislogged action lowers the likelihood of the silent groups instead of ruling them out.
SILENT_LOGIT = -30.0


def _present(values: torch.Tensor) -> torch.Tensor:
    """The logged values that are there (a missing cell is NaN)."""
    values = values.float()
    return values[torch.isfinite(values)]


def _signed(preference: torch.Tensor, spec: ChannelSpec) -> torch.Tensor:
    return preference if spec.sign > 0 else 1 - preference


def _select(off: torch.Tensor, on: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
    """``on`` where the 0/1 ``flag`` is 1, else ``off``, by arithmetic (broadcasts enumerated values)."""
    return off + flag * (on - off)


CHANNEL_TYPES: dict[str, type[Channel]] = {}


def register_channel(cls: type[Channel]) -> type[Channel]:
    """Class decorator: make a channel type loadable in this process by its class path
    (``module:Qualname``, so two packages' ``Rating`` never collide). A class in an importable module
    reloads without it (a saved model records the path); registering is for classes defined where
    no import reaches them, such as a notebook."""
    CHANNEL_TYPES[class_path(cls)] = cls
    if cls.__module__.startswith("pyro_irm."):  # the bare names older saves recorded
        CHANNEL_TYPES.setdefault(cls.__name__, cls)
    return cls


class Channel(nn.Module):
    """Base class of emission components. ``transform`` maps logged values to the modelled ones.

    Declarations the toolkit reads: ``uses_engagement`` (False for a channel whose value does not
    depend on o, such as a rater's verdict: evidence that pins the split of preference from
    engagement) and :meth:`global_priors` (the channel's own global latents, which the model
    samples before the rows and hands back to :meth:`distribution` by name).
    """

    spec: ChannelSpec
    uses_engagement = True

    def global_priors(self) -> dict[str, dist.Distribution]:
        """``{name: prior}`` of this channel's global latents (site ``<its site>.<name>``); each
        value reaches :meth:`distribution` as the keyword ``name``. None here."""
        return {}

    @classmethod
    def build(cls, spec: ChannelSpec, config, feature_dim: int, **settings) -> Channel:
        """A fresh channel of this type for ``spec`` with its own ``settings`` (what loading a saved
        model calls, with what :meth:`settings` returned)."""
        return cls(spec, feature_dim, **settings)

    def settings(self) -> dict:
        """This channel's own constructor arguments beyond ``spec`` and ``feature_dim``, saved with
        the model and given back to :meth:`build` (read from attributes of the same names; see
        :func:`~pyro_irm.models.components.constructor_settings`). Override to say otherwise."""
        return constructor_settings(self, skip=("spec", "feature_dim"), own=False)

    def transform(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def initialize(self, values: torch.Tensor) -> None:
        """Set starting values from the channel's logged values ``(N,)`` (optional)."""

    def distribution(
        self, preference: torch.Tensor, engagement: torch.Tensor, features: torch.Tensor | None
    ) -> dist.Distribution:
        raise NotImplementedError


@register_channel
class NoisyAndChannel(Channel):
    """The seed paper's channel with fixed rates: ``P(y=1 | r, o) = o * (r' (1 - eps1) + (1 - r') eps0)``,
    with ``r' = r`` (``1 - r`` for a negative channel); ``y = r' AND o`` when both eps are 0.

    The rates are fixed buffers (saved with the model). ``torch.distributions.Bernoulli`` clamps
    probabilities of exactly 0 and 1 to the dtype's epsilon, so impossible (y, r, o) combinations
    get a log-probability of about -16 in float32 and -36 in float64, not -inf.
    """

    def __init__(self, eps0: float = 0.0, eps1: float = 0.0, spec: ChannelSpec | None = None):
        super().__init__()
        self.spec = spec or ChannelSpec("action")
        if self.spec.kind != "binary":
            raise ValueError(f"channel {self.spec.name!r}: NoisyAndChannel is for binary channels")
        # float64 so that the rates are exact; they are cast to the inputs' dtype where used.
        self.register_buffer("eps0", torch.tensor(float(eps0), dtype=torch.float64))
        self.register_buffer("eps1", torch.tensor(float(eps1), dtype=torch.float64))

    @classmethod
    def build(cls, spec: ChannelSpec, config, feature_dim: int, **settings) -> NoisyAndChannel:
        return cls(config.eps0, config.eps1, spec)  # its rates are the configuration's

    def action_probability(self, preference: torch.Tensor, engagement: torch.Tensor) -> torch.Tensor:
        eps0 = self.eps0.to(preference.dtype)
        eps1 = self.eps1.to(preference.dtype)
        signed = _signed(preference, self.spec)
        return engagement * (signed * (1 - eps1) + (1 - signed) * eps0)

    def distribution(
        self, preference: torch.Tensor, engagement: torch.Tensor, features: torch.Tensor | None = None
    ) -> dist.Bernoulli:
        """``Bernoulli`` over y for (broadcastable) 0/1 tensors ``r`` and ``o``."""
        return dist.Bernoulli(probs=self.action_probability(preference, engagement))


def kind_component(spec: ChannelSpec) -> type[Channel]:
    """The default emission class of ``spec``'s kind (a kind registered in this process names its
    module, which is therefore trusted to load)."""
    from pyro_irm.models.components import load_class, trust_modules

    component = spec.domain.component
    trust_modules(component.partition(":")[0])
    return load_class(component, base=Channel)


class FlipRatePrior(dist.TransformedDistribution):
    """``eps = Beta(a, b) / 2``: a flip rate below one half, so that a flip never turns the meaning
    of r around (Dawid-Skene's confusion of a rater better than chance)."""

    arg_constraints = {}
    support = constraints.interval(0.0, 0.5)

    def __init__(self, concentration1: torch.Tensor, concentration0: torch.Tensor, validate_args=None):
        super().__init__(
            dist.Beta(concentration1, concentration0), [AffineTransform(0.0, 0.5)], validate_args
        )


# Beta(1.5, 3.5) halved: mean 0.15, mode 0.06; a few thousand rows outweigh it.
FLIP_PRIOR = (1.5, 3.5)


def flip_rate_priors(holder: nn.Module) -> dict[str, dist.Distribution]:
    """``eps0`` (P(y=1 | r=0)) and ``eps1`` (P(y=0 | r=1)) priors from ``holder``'s ``flip_prior``
    buffer ``(2,)``."""
    a, b = holder.flip_prior[0], holder.flip_prior[1]
    return {"eps0": FlipRatePrior(a, b), "eps1": FlipRatePrior(a, b)}


def _flipped(signed: torch.Tensor, eps0: torch.Tensor, eps1: torch.Tensor) -> torch.Tensor:
    """``P(verdict = 1) = r' (1 - eps1) + (1 - r') eps0``."""
    eps0, eps1 = eps0.to(signed.dtype), eps1.to(signed.dtype)
    return signed * (1 - eps1) + (1 - signed) * eps0


@register_channel
class AnnotatorChannel(Channel):
    """A rater's 0/1 verdict on the preference, whatever the engagement: ``P(y = 1 | r) = r' (1 -
    eps1) + (1 - r') eps0`` with ``r' = r`` (``1 - r`` for a negative channel). The flip rates are
    global latents with a prior (:class:`FlipRatePrior`), learned in the fit: CausalRM's noisy
    labels, Dawid-Skene's confusion of one rater. Its value ignores o (``uses_engagement`` False).

    Args:
        spec: the channel (kind ``annotation``, or ``binary``).
        feature_dim: unused (a rater sees the response, not the context).
        prior: ``(a, b)`` of the rates' ``Beta(a, b) / 2`` prior.
    """

    uses_engagement = False

    def __init__(self, spec: ChannelSpec, feature_dim: int = 0, prior: tuple[float, float] = FLIP_PRIOR):
        super().__init__()
        self.spec = spec
        self.feature_dim = feature_dim
        self.prior = tuple(float(v) for v in prior)
        self.register_buffer("flip_prior", torch.tensor(self.prior), persistent=False)

    def global_priors(self) -> dict[str, dist.Distribution]:
        return flip_rate_priors(self)

    def distribution(self, preference, engagement, features=None, eps0=None, eps1=None) -> dist.Bernoulli:
        if eps0 is None or eps1 is None:
            raise ValueError(f"channel {self.spec.name!r}: the flip rates eps0 and eps1 are global latents")
        return dist.Bernoulli(probs=_flipped(_signed(preference, self.spec), eps0, eps1))


@register_channel
class SignedBinaryChannel(Channel):
    """A learned binary channel: on an engaged row (o = 1),
    ``logit P(y=1) = a + softplus(b) * r' + w . x`` with ``r'`` the signed preference and ``x`` the
    row's features (context, embedding or none: the channel's own propensity, for example code blocks
    drawing copies); a silent row fires with logit ``SILENT_LOGIT``.

    Args:
        spec: the channel's declaration. feature_dim: F, width of ``features`` (0 for none).
    """

    def __init__(self, spec: ChannelSpec, feature_dim: int = 0, effect: float = 2.0):
        super().__init__()
        if spec.kind != "binary":
            raise ValueError(f"channel {spec.name!r}: SignedBinaryChannel is for binary channels")
        self.spec = spec
        self.intercept = nn.Parameter(torch.zeros(()))
        # softplus(raw) is the effect of r'; start at a clear but moderate effect.
        self.raw_effect = nn.Parameter(torch.tensor(math.log(math.expm1(effect))))
        self.features = nn.Linear(feature_dim, 1) if feature_dim > 0 else None
        if self.features is not None:
            nn.init.zeros_(self.features.weight)
            nn.init.zeros_(self.features.bias)

    def initialize(self, values: torch.Tensor) -> None:
        # Start where an engaged row of the less likely polarity fires at the logged rate.
        rate = float(_present(values).mean().clamp(1e-3, 1 - 1e-3)) if _present(values).numel() else 0.5
        with torch.no_grad():
            self.intercept.fill_(math.log(rate / (1 - rate)))

    def engaged_logits(self, preference: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        logits = self.intercept + F.softplus(self.raw_effect) * _signed(preference, self.spec)
        if self.features is not None and features is not None:
            logits = logits + full_precision(self.features(features).squeeze(-1))
        return logits

    def distribution(
        self, preference: torch.Tensor, engagement: torch.Tensor, features: torch.Tensor | None
    ) -> dist.Bernoulli:
        engaged = self.engaged_logits(preference, features)
        silent = torch.full_like(engaged, SILENT_LOGIT)
        return dist.Bernoulli(logits=_select(silent, engaged, engagement))


class _SilentEngagedChannel(Channel):
    """Shared parts of the continuous, count and ordinal channels: a location ``m_o`` and a non-negative
    preference effect ``softplus(b_o)`` for silent (o = 0) and engaged (o = 1) rows, plus
    ``w . x`` of the row's features: ``eta = m_o + softplus(b_o) * r' + w . x``."""

    kind: str
    initial_effect = 0.5  # softplus(b_o) at the start

    def __init__(self, spec: ChannelSpec, feature_dim: int = 0):
        super().__init__()
        if spec.kind != self.kind:
            raise ValueError(f"channel {spec.name!r}: {type(self).__name__} is for {self.kind} channels")
        self.spec = spec
        self.location = nn.Parameter(torch.zeros(2))  # silent, engaged
        self.raw_effect = nn.Parameter(torch.full((2,), math.log(math.expm1(self.initial_effect))))
        self.features = nn.Linear(feature_dim, 1) if feature_dim > 0 else None
        if self.features is not None:
            nn.init.zeros_(self.features.weight)
            nn.init.zeros_(self.features.bias)

    def predictor(self, preference, engagement, features) -> torch.Tensor:
        effect = F.softplus(self.raw_effect)
        eta = _select(self.location[0], self.location[1], engagement) + _select(
            effect[0], effect[1], engagement
        ) * _signed(preference, self.spec)
        if self.features is not None and features is not None:
            eta = eta + full_precision(self.features(features).squeeze(-1))
        return eta


@register_channel
class LogNormalChannel(_SilentEngagedChannel):
    """A continuous channel such as dwell seconds, modelled as ``log1p(seconds)``:
    ``Normal(m_o + softplus(b_o) * r' + w . x, s_o)`` with its own location ``m``, preference effect
    ``b`` and spread ``s`` for silent (o = 0) and engaged (o = 1) rows: people read silently too, and
    read what they like longer. The log-density is that of ``log1p(value)`` (the Jacobian of the
    transform is a constant of the data, left out).
    """

    kind = "continuous"
    initial_effect = 0.1

    def __init__(self, spec: ChannelSpec, feature_dim: int = 0):
        super().__init__(spec, feature_dim)
        self.raw_scale = nn.Parameter(torch.zeros(2))

    def transform(self, values: torch.Tensor) -> torch.Tensor:
        return torch.log1p(values.clamp_min(0))

    def initialize(self, values: torch.Tensor) -> None:
        logged = self.transform(_present(values))
        if not len(logged):
            return
        mean, std = float(logged.mean()), float(logged.std().clamp_min(1e-2)) if len(logged) > 1 else 1.0
        with torch.no_grad():
            # Engaged rows start a little above the mean, silent ones a little below.
            self.location.copy_(torch.tensor([mean - 0.25 * std, mean + 0.25 * std]))
            self.raw_scale.fill_(math.log(math.expm1(std)))

    def distribution(
        self, preference: torch.Tensor, engagement: torch.Tensor, features: torch.Tensor | None
    ) -> dist.Normal:
        location = self.predictor(preference, engagement, features)
        scale = F.softplus(_select(self.raw_scale[0], self.raw_scale[1], engagement)) + 1e-3
        return dist.Normal(location, scale)


@register_channel
class CountChannel(_SilentEngagedChannel):
    """Tallies such as reaction counts: negative binomial (a Gamma-Poisson) with mean
    ``exp(eta)`` and its own dispersion for silent and engaged rows, so that a few very popular
    rows do not dominate as they would under a Poisson."""

    kind = "count"

    def __init__(self, spec: ChannelSpec, feature_dim: int = 0):
        super().__init__(spec, feature_dim)
        self.raw_concentration = nn.Parameter(torch.zeros(2))

    def initialize(self, values: torch.Tensor) -> None:
        present = _present(values)
        if present.numel():
            with torch.no_grad():
                self.location.fill_(math.log(float(present.mean()) + 0.1))

    def distribution(self, preference, engagement, features) -> dist.GammaPoisson:
        mean = torch.exp(self.predictor(preference, engagement, features).clamp(max=20.0))
        concentration = F.softplus(_select(self.raw_concentration[0], self.raw_concentration[1], engagement))
        concentration = concentration + 1e-3
        return dist.GammaPoisson(concentration, concentration / mean)


@register_channel
class OrdinalChannel(_SilentEngagedChannel):
    """Ratings 1 to ``spec.levels``: cumulative logits (ordered logistic) of ``eta`` against
    ``levels - 1`` increasing cutpoints; a preferred response moves the rating up (or down, for a
    negative channel)."""

    kind = "ordinal"

    def __init__(self, spec: ChannelSpec, feature_dim: int = 0):
        super().__init__(spec, feature_dim)
        gaps = spec.levels - 2
        self.first_cut = nn.Parameter(torch.tensor(-1.0))
        self.raw_gaps = nn.Parameter(torch.full((gaps,), math.log(math.expm1(1.0))))

    def cutpoints(self) -> torch.Tensor:
        return torch.cat([self.first_cut[None], self.first_cut + torch.cumsum(F.softplus(self.raw_gaps), 0)])

    def transform(self, values: torch.Tensor) -> torch.Tensor:
        return values - 1  # ratings 1..K as the categories 0..K-1

    def distribution(self, preference, engagement, features) -> dist.OrderedLogistic:
        eta = self.predictor(preference, engagement, features)
        return dist.OrderedLogistic(eta, self.cutpoints().to(eta.dtype))


class LabelChannel(nn.Module):
    """Explicit labels as a noisy view of r: ``P(label = 1 | r) = r (1 - eps1) + (1 - r) eps0``.
    Fixed (``eps0 = eps1 = noise``; with 0 a label is the observed preference of its row), or,
    ``learned``, two global latents with a :class:`FlipRatePrior`, learned in the fit."""

    def __init__(self, noise: float = 0.0, learned: bool = False):
        super().__init__()
        self.learned = learned
        self.register_buffer("noise", torch.tensor(float(noise), dtype=torch.float64))
        self.register_buffer("flip_prior", torch.tensor(FLIP_PRIOR), persistent=False)

    def global_priors(self) -> dict[str, dist.Distribution]:
        return flip_rate_priors(self) if self.learned else {}

    def distribution(
        self, preference: torch.Tensor, eps0: torch.Tensor | None = None, eps1: torch.Tensor | None = None
    ) -> dist.Bernoulli:
        noise = self.noise.to(preference.dtype)
        eps0 = noise if eps0 is None else eps0
        eps1 = noise if eps1 is None else eps1
        return dist.Bernoulli(probs=_flipped(preference, eps0, eps1))
