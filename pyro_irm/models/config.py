"""Model configuration: network sizes and the generative assumptions of the four-group model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PropensityFeatures = Literal["embedding", "context", "both"]
ChannelFeatures = Literal["none", "context", "embedding", "both"]
ChannelEmission = Literal["auto", "fixed", "learned"]
RewardHead = Literal["mlp", "linear"]
GlobalGuideKind = Literal["auto", "map", "normal"]  # the guide of the global latents (models.guides)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and assumptions of the reward (f), propensity (g) and stratification networks.

    The help text of each field is reused by the command line.
    """

    reward_head: RewardHead = field(
        default="mlp",
        metadata={
            "help": "the reward network f: 'mlp' (hidden layers --reward-hidden, GELU) or 'linear': one "
            "bias-free linear map of the embedding, what a stock *ForSequenceClassification score "
            "layer computes, so a run over a decoder exports as a stock checkpoint (export --format stock)"
        },
    )
    reward_hidden: tuple[int, ...] = field(
        default=(256, 64),
        metadata={"help": "hidden layer widths of the reward network f (with --reward-head mlp)"},
    )
    propensity_hidden: tuple[int, ...] = field(
        default=(64,), metadata={"help": "hidden layer widths of the propensity network g"}
    )
    guide_hidden: tuple[int, ...] = field(
        default=(128, 64),
        metadata={"help": "hidden layer widths of the amortized stratification network q(r, o | e, y)"},
    )
    propensity_features: PropensityFeatures = field(
        default="both",
        metadata={
            "help": "what g sees: 'embedding', 'context' (columns f does not see), or 'both'; "
            "'both' uses the embedding alone when the data has no context"
        },
    )
    propensity_depends_on_preference: bool = field(
        default=False,
        metadata={
            "help": "let P(o=1) depend on r (users act on what they feel strongly about); "
            "the default is the seed paper's form, o independent of r given the text"
        },
    )
    eps0: float = field(default=0.0, metadata={"help": "P(y=1 | r=0, o=1): false-positive action rate"})
    eps1: float = field(default=0.0, metadata={"help": "P(y=0 | r=1, o=1): missed action rate"})
    dropout: float = field(default=0.0, metadata={"help": "dropout in every network's hidden layers"})
    channel_emission: ChannelEmission = field(
        default="auto",
        metadata={
            "help": "binary channels' emission: 'fixed' (the seed paper's y = r AND o with rates eps0, "
            "eps1), 'learned' (sign-constrained rates per channel), or 'auto': fixed for a lone "
            "binary channel, learned when there are several"
        },
    )
    channel_features: ChannelFeatures = field(
        default="none",
        metadata={
            "help": "what a learned channel's emission sees besides (r, o): 'none', 'context', "
            "'embedding' or 'both' (a channel's own propensity, e.g. code blocks drawing copies)"
        },
    )
    user_scale: float = field(
        default=1.0,
        metadata={
            "help": "prior standard deviation of the per-user engagement effects (logits); with "
            "--learn-user-scale, the scale of the HalfNormal prior of that standard deviation"
        },
    )
    learn_user_scale: bool = field(
        default=False,
        metadata={
            "help": "learn how much users differ: the effects' standard deviation is a latent with a "
            "HalfNormal(user_scale) prior (a hierarchical effect; its effects get a Normal guide)"
        },
    )
    label_noise: float = field(
        default=0.0,
        metadata={"help": "P(label disagrees with r) for explicit labels used in the fit (--fit-labels)"},
    )
    learn_label_noise: bool = field(
        default=False,
        metadata={
            "help": "learn the labels' flip rates eps0 = P(label=1 | r=0) and eps1 = P(label=0 | r=1) as "
            "global latents with a Beta(1.5, 3.5)/2 prior, instead of the fixed --label-noise"
        },
    )
    erase_context_from_reward: bool = field(
        default=False,
        metadata={
            "help": "remedy for one channel with context: f reads the embedding with the directions that "
            "linearly predict the context removed, so the context's effect must go to engagement "
            "(folded into f's first layer after the fit)"
        },
    )
    engagement_prior_weight: float = field(
        default=0.0,
        metadata={
            "help": "remedy for one channel with context: weight of a prior pulling P(o=1) toward an "
            "exposure estimate (the log's --propensity-col, else the action rate given the context "
            "alone, relative to its highest, to --engagement-prior-power); 0: none"
        },
    )
    engagement_prior_power: float = field(
        default=0.5,
        metadata={"help": "power of the estimated exposure (0.5: Rel-MF's popularity ** 0.5)"},
    )
    reward_context_penalty: float = field(
        default=0.0,
        metadata={
            "help": "remedy for one channel with context: weight of a penalty on the squared correlation "
            "between the reward and each context column within a minibatch, which assumes quality "
            "does not follow the context; 0: none"
        },
    )

    def __post_init__(self) -> None:
        for name in ("reward_hidden", "propensity_hidden", "guide_hidden"):
            widths = tuple(getattr(self, name))
            if any(int(w) < 1 for w in widths):
                raise ValueError(f"{name}: every width must be a positive integer, got {widths}")
            object.__setattr__(self, name, tuple(int(w) for w in widths))
        if self.reward_head not in ("mlp", "linear"):
            raise ValueError(f"reward_head must be 'mlp' or 'linear', got {self.reward_head!r}")
        if self.propensity_features not in ("embedding", "context", "both"):
            raise ValueError(
                "propensity_features must be 'embedding', 'context' or 'both', "
                f"got {self.propensity_features!r}"
            )
        for name in ("eps0", "eps1"):
            value = getattr(self, name)
            if not 0.0 <= value < 0.5:
                raise ValueError(f"{name} must lie in [0, 0.5), got {value}")
        if self.channel_emission not in ("auto", "fixed", "learned"):
            raise ValueError(
                f"channel_emission must be 'auto', 'fixed' or 'learned', got {self.channel_emission!r}"
            )
        if self.channel_features not in ("none", "context", "embedding", "both"):
            raise ValueError(
                "channel_features must be 'none', 'context', 'embedding' or 'both', "
                f"got {self.channel_features!r}"
            )
        if not self.user_scale > 0:
            raise ValueError(f"user_scale must be positive, got {self.user_scale}")
        if not 0.0 <= self.label_noise < 0.5:
            raise ValueError(f"label_noise must lie in [0, 0.5), got {self.label_noise}")
        if not self.engagement_prior_weight >= 0:
            raise ValueError(f"engagement_prior_weight must be >= 0, got {self.engagement_prior_weight}")
        if not self.reward_context_penalty >= 0:
            raise ValueError(f"reward_context_penalty must be >= 0, got {self.reward_context_penalty}")
        if not self.engagement_prior_power > 0:
            raise ValueError(f"engagement_prior_power must be positive, got {self.engagement_prior_power}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
