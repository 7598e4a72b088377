"""How data are simulated: the configurations of :mod:`pyro_irm.data.simulation` and
:mod:`pyro_irm.data.chatlog_simulation`. Nothing here imports torch, so the command line builds its options
from them without loading it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PropensityForm = Literal["logistic", "alpha_power"]
SimulatedSetting = Literal[
    "implicit", "observational", "chatlog"
]  # a simulated log (estimators.Setting: what a log records)


@dataclass(frozen=True)
class SimulationConfig:
    """How implicit feedback is generated. Defaults give strong propensity bias (a response feature
    and the display position drive P(o=1), independently of preference) at a 50% observation rate,
    on 32-dim synthetic embeddings.

    ``world_seed`` fixes the true reward and propensity directions; ``seed`` fixes the rows drawn
    from that world, so two data sets with the same ``world_seed`` share one truth (train and test).
    """

    num_rows: int = field(default=20_000, metadata={"help": "rows to simulate"})
    embedding_dim: int = field(default=32, metadata={"help": "dimension of the synthetic embeddings"})
    positive_rate: float = field(
        default=0.5, metadata={"help": "share of preferred rows in the synthetic world"}
    )
    preference_sharpness: float = field(
        default=4.0,
        metadata={
            "help": "P(r=1) = sigmoid(sharpness * (score - threshold)); larger is closer to a hard threshold"
        },
    )
    reward_nonlinearity: float = field(
        default=0.5, metadata={"help": "weight of the quadratic part of the synthetic true score"}
    )
    propensity_form: PropensityForm = field(
        default="logistic",
        metadata={
            "help": "'logistic' (a response feature and the position drive P(o=1)) or the papers' "
            "'alpha_power'"
        },
    )
    observation_rate: float = field(
        default=0.5, metadata={"help": "mean P(o=1): the share of rows whose user would act"}
    )
    feature_strength: float = field(
        default=2.0,
        metadata={
            "help": "logistic form: how strongly a response feature unrelated to quality drives P(o=1)"
        },
    )
    preference_bias: float = field(
        default=0.0, metadata={"help": "logistic form: logit P(o=1) shift for preferred responses"}
    )
    context_strength: float = field(
        default=1.5,
        metadata={"help": "logistic form: logit P(o=1) lost per standard deviation of display position"},
    )
    num_positions: int = field(
        default=5, metadata={"help": "display positions 1..N (a context column that drives propensity only)"}
    )
    alpha: float = field(
        default=0.5,
        metadata={
            "help": "alpha-power base: P(o=1) grows as alpha ** (5 - score); smaller is stronger "
            "preference bias"
        },
    )
    eps0: float = field(
        default=0.0,
        metadata={"help": "flip rate eps0 = P(y=1 | r=0, o=1): an action on a response not preferred"},
    )
    eps1: float = field(
        default=0.0,
        metadata={
            "help": "flip rate eps1 = P(y=0 | r=1, o=1): no action on a preferred response when engaged"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the rows and actions"})
    world_seed: int = field(
        default=0,
        metadata={
            "help": "seed of the world's true reward and propensity directions (shared by train and test)"
        },
    )
    setting: SimulatedSetting = field(
        default="implicit",
        metadata={
            "help": "'implicit' (only the action is logged), 'observational' (o is logged) or 'chatlog'"
        },
    )

    def __post_init__(self) -> None:
        if self.setting not in ("implicit", "observational", "chatlog"):
            raise ValueError(
                f"setting must be 'implicit', 'observational' or 'chatlog', got {self.setting!r}"
            )
        if self.num_rows < 1:
            raise ValueError(f"num_rows must be at least 1, got {self.num_rows}")
        if self.embedding_dim < 3:
            raise ValueError(f"embedding_dim must be at least 3, got {self.embedding_dim}")
        for name in ("positive_rate", "observation_rate"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {value}")
        for name in ("eps0", "eps1"):
            value = getattr(self, name)
            if not 0.0 <= value < 0.5:
                raise ValueError(f"{name} must lie in [0, 0.5), got {value}")
        if self.eps0 + self.eps1 >= 1.0:
            raise ValueError("eps0 + eps1 must be below 1 for the action to carry information")
        if self.propensity_form not in ("logistic", "alpha_power"):
            raise ValueError(
                f"propensity_form must be 'logistic' or 'alpha_power', got {self.propensity_form!r}"
            )
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in (0, 1], got {self.alpha}")
        if self.num_positions < 1:
            raise ValueError(f"num_positions must be at least 1, got {self.num_positions}")
        if self.preference_sharpness <= 0:
            raise ValueError(f"preference_sharpness must be positive, got {self.preference_sharpness}")

    @property
    def has_context(self) -> bool:
        return self.propensity_form == "logistic" and self.context_strength != 0.0 and self.num_positions > 1


@dataclass(frozen=True)
class ChatLogConfig:
    """How the chat log is drawn. The help text of each field is reused by the command line."""

    engagement_rate: float = field(
        default=0.5, metadata={"help": "mean P(engaged): the share of rows whose user would act at all"}
    )
    length_effect: float = field(
        default=1.0, metadata={"help": "engagement logit per standard deviation of log response length"}
    )
    code_effect: float = field(
        default=1.0, metadata={"help": "engagement logit of a response with a code block"}
    )
    position_effect: float = field(
        default=0.8, metadata={"help": "engagement logit lost per standard deviation of display position"}
    )
    preference_bias: float = field(
        default=0.0,
        metadata={"help": "engagement logit of a preferred response (0: engagement ignores quality)"},
    )
    num_users: int = field(default=200, metadata={"help": "number of simulated users"})
    user_activity: float = field(
        default=1.0, metadata={"help": "standard deviation of the users' engagement effects (logits)"}
    )
    num_positions: int = field(default=5, metadata={"help": "display positions 1..N, drawn uniformly"})
    copy_logit: float = field(
        default=-1.5, metadata={"help": "copy logit of an engaged, not preferred response without code"}
    )
    copy_effect: float = field(default=2.0, metadata={"help": "copy logit gained when preferred"})
    copy_code_effect: float = field(
        default=1.5, metadata={"help": "copy logit gained by a code block (copy's own propensity)"}
    )
    thumbs_logit: float = field(
        default=-2.5, metadata={"help": "thumbs-up logit of an engaged, not preferred response"}
    )
    thumbs_effect: float = field(default=2.5, metadata={"help": "thumbs-up logit gained when preferred"})
    regenerate_logit: float = field(
        default=0.0, metadata={"help": "regenerate logit of an engaged, not preferred response"}
    )
    regenerate_effect: float = field(default=3.0, metadata={"help": "regenerate logit lost when preferred"})
    dwell_silent: float = field(
        default=2.5, metadata={"help": "mean log1p(dwell seconds) of a silent, not preferred response"}
    )
    dwell_length: float = field(
        default=0.3, metadata={"help": "log dwell per standard deviation of log length"}
    )
    dwell_effect: float = field(
        default=0.2, metadata={"help": "log dwell gained when preferred, on every row"}
    )
    dwell_engaged_shift: float = field(default=0.7, metadata={"help": "log dwell gained by an engaged row"})
    dwell_engaged_effect: float = field(
        default=0.5, metadata={"help": "further log dwell gained by an engaged, preferred row"}
    )
    dwell_sd: float = field(default=0.5, metadata={"help": "standard deviation of log1p(dwell seconds)"})
    label_fraction: float = field(default=0.05, metadata={"help": "share of rows with an explicit label"})
    seed: int = field(default=0, metadata={"help": "seed of users, positions and actions"})

    def __post_init__(self) -> None:
        if not 0.0 < self.engagement_rate < 1.0:
            raise ValueError(f"engagement_rate must lie in (0, 1), got {self.engagement_rate}")
        if self.num_users < 1:
            raise ValueError(f"num_users must be at least 1, got {self.num_users}")
        if self.num_positions < 1:
            raise ValueError(f"num_positions must be at least 1, got {self.num_positions}")
        if not 0.0 <= self.label_fraction <= 1.0:
            raise ValueError(f"label_fraction must lie in [0, 1], got {self.label_fraction}")
        if self.user_activity < 0 or self.dwell_sd <= 0:
            raise ValueError("user_activity must be non-negative and dwell_sd positive")
