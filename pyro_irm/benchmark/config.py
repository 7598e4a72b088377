"""The benchmark's settings: which methods, how many seeds, which setting, and the training and
simulation configurations it hands to every fit. Nothing here imports torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pyro_irm.data.config import SimulationConfig
from pyro_irm.data.preference_formats import PREFERENCE_SETS
from pyro_irm.estimators import METHOD_NAMES, get_estimator
from pyro_irm.inference.config import TrainConfig
from pyro_irm.models.config import ModelConfig

DATASETS = ("synthetic", *PREFERENCE_SETS)
METRICS = ("mae", "rmse", "r2", "auc", "log_loss", "ece", "pairwise_accuracy")
LOWER_IS_BETTER = frozenset({"mae", "rmse", "log_loss", "ece"})
SWEEPABLE = ("alpha", "observation_rate", "eps0", "eps1", "feature_strength", "preference_bias")
SETTINGS = ("implicit", "observational")

# Every fit of the protocol: shorter and in smaller batches than a single fit's defaults, with a
# fifth of the training pool held out for model selection (the papers' 80/20 split).
PROTOCOL_TRAINING = TrainConfig(max_epochs=40, batch_size=512, validation_fraction=0.2, progress=False)


def default_simulation(setting: str = "implicit") -> SimulationConfig:
    """The papers' simulation: alpha-power propensity, alpha 0.5, observation rate 0.5 and no noise
    for 'implicit' (ImplicitRM); observation rate 0.2 and flip rates eps1 = P(y=0 | r=1) = 0.2,
    eps0 = P(y=1 | r=0) = 0.1 for 'observational' (CausalRM's S1)."""
    if setting == "observational":
        return SimulationConfig(
            propensity_form="alpha_power", observation_rate=0.2, eps0=0.1, eps1=0.2, setting=setting
        )
    return SimulationConfig(propensity_form="alpha_power", setting=setting)


@dataclass(frozen=True)
class BenchmarkConfig:
    """The protocol's settings. ``train`` configures every fit (its method and seed are set per
    fit); ``simulation`` how feedback is drawn (its seed is set per seed; None: the setting's
    defaults, :func:`default_simulation`). The help text is reused by the command line."""

    methods: tuple[str, ...] = field(
        default=METHOD_NAMES, metadata={"help": "methods to compare (names, space or comma separated)"}
    )
    seeds: int = field(default=5, metadata={"help": "simulation and fit seeds"})
    setting: str = field(
        default="implicit",
        metadata={
            "help": "'implicit' (ImplicitRM: o latent), 'observational' (CausalRM: o logged), "
            "'chatlog' (several channels, users and a few labels; --chatlog-* options), or "
            "'one-channel-context' (one copy channel whose propensity follows length and code blocks, "
            "which the embedding encodes too: the identification check and its remedies)",
            "choices": lambda: (*SETTINGS, "chatlog", "one-channel-context"),
        },
    )
    train: TrainConfig = field(default=PROTOCOL_TRAINING, metadata={"help": "how every method is fit"})
    simulation: SimulationConfig | None = field(
        default=None, metadata={"help": "how feedback is simulated (None: the setting's defaults)"}
    )

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {self.seeds}")
        if self.setting not in (*SETTINGS, "chatlog", "one-channel-context"):
            raise ValueError(
                "setting must be 'implicit', 'observational', 'chatlog' or 'one-channel-context', "
                f"got {self.setting!r}"
            )
        for name in self.methods:
            get_estimator(name)
        simulated = "chatlog" if self.setting == "one-channel-context" else self.setting  # a chat log too
        if self.simulation is None:
            object.__setattr__(self, "simulation", default_simulation(simulated))
        elif self.simulation.setting != simulated:
            object.__setattr__(self, "simulation", replace(self.simulation, setting=simulated))

    def simulation_for(self, seed: int) -> SimulationConfig:
        return replace(self.simulation, seed=seed)

    def training_for(self, method: str, seed: int) -> TrainConfig:
        return replace(self.train, method=method, seed=seed, progress=False)

    def applicable_methods(self) -> tuple[str, ...]:
        return tuple(m for m in self.methods if self.setting in get_estimator(m).settings)


@dataclass(frozen=True)
class UserModel:
    """A model of the user's in the benchmark, beside the registered methods: ``build(train)``
    makes a fresh, untrained model for each seed's training rows (a :class:`FeedbackData`), which
    ``method``'s inference fits (one initialization, so ``restarts`` is 1). ``name`` labels its row
    in the results and must not be a method's."""

    name: str
    method: str
    build: Callable[[Any], Any]


CHATLOG_VARIANTS = (
    "naive",
    "naive_no_negative",
    "implicitrm_one_channel",
    "implicitrm_or",
    "implicitrm_channels",
    "implicitrm_users",
    "implicitrm_users_spread",
    "implicitrm_labels",
    "oracle",
    "oracle_engaged",
)


# The one-channel-context setting (benchmark --setting one-channel-context): one positive channel
# whose propensity follows context columns the embedding also encodes (length, code blocks).
ONE_CHANNEL_VARIANTS = (
    "naive",
    "implicitrm_one_channel",
    "implicitrm_context_only",
    "implicitrm_erase",
    "implicitrm_prior",
    "implicitrm_context_prior",
    "implicitrm_decorrelate",
    "implicitrm_labels",
    "oracle",
)
# Each remedy variant: its ModelConfig settings (what it changes in the default fit).
REMEDY_SETTINGS = {
    "implicitrm_context_only": {"propensity_features": "context"},
    "implicitrm_erase": {"erase_context_from_reward": True},
    "implicitrm_prior": {"engagement_prior_weight": 1.0},
    "implicitrm_context_prior": {"propensity_features": "context", "engagement_prior_weight": 1.0},
    "implicitrm_decorrelate": {"reward_context_penalty": 1.0},
}
# The model settings of every variant that changes them: the remedies, and the users' spread learned.
VARIANT_MODEL_SETTINGS = {**REMEDY_SETTINGS, "implicitrm_users_spread": {"learn_user_scale": True}}


def reward_layouts(layouts: tuple[str, ...]) -> list[tuple[int, ...]]:
    """Each ``"256,64"`` layout as its hidden widths; a bad one is named."""
    if not layouts:
        raise ValueError("reward_widths: give at least one layout")
    parsed = []
    for layout in layouts:
        try:
            widths = tuple(int(w) for w in str(layout).split(",") if w.strip())
        except ValueError:
            raise ValueError(f"reward_widths: {layout!r} is not comma-separated integers") from None
        if not widths or min(widths) < 1:
            raise ValueError(f"reward_widths: {layout!r} needs positive widths")
        parsed.append(widths)
    return parsed


@dataclass(frozen=True)
class ChatLogBenchmarkConfig:
    """Settings of the chat-log benchmark; the help text is reused by the command line."""

    variants: tuple[str, ...] = field(
        default=CHATLOG_VARIANTS, metadata={"help": "variants to fit: " + ", ".join(CHATLOG_VARIANTS)}
    )
    seeds: int = field(default=5, metadata={"help": "chat logs drawn (and fit seeds)"})
    label_fraction: float = field(
        default=0.02, metadata={"help": "share of training rows with an explicit label"}
    )
    dwell_threshold: float = field(
        default=120.0, metadata={"help": "implicitrm_or: dwell seconds above which a row counts as acted"}
    )
    max_epochs: int = field(default=100, metadata={"help": "upper bound on epochs per fit"})
    reward_widths: tuple[str, ...] = field(
        default=("256,64", "64", "32"),
        metadata={
            "help": "reward network hidden widths to choose from, each as comma-separated widths; "
            "every variant keeps the one with its best held-out score (never the test labels)"
        },
    )
    propensity_inputs: tuple[str, ...] = field(
        default=("both",),
        metadata={
            "help": "what the ImplicitRM variants' propensity network may see ('embedding', 'context', "
            "'both'); given several, each variant keeps the one with its best held-out ELBO"
        },
    )

    def __post_init__(self) -> None:
        bad = sorted(set(self.propensity_inputs) - {"embedding", "context", "both"})
        if bad or not self.propensity_inputs:
            raise ValueError(
                f"propensity_inputs: give some of 'embedding', 'context', 'both' (got {bad or 'none'})"
            )
        known = dict.fromkeys((*CHATLOG_VARIANTS, *ONE_CHANNEL_VARIANTS))
        unknown = sorted(set(self.variants) - set(known))
        if unknown:
            raise ValueError(f"unknown chat-log variants {unknown}; choose from {', '.join(known)}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {self.seeds}")
        reward_layouts(self.reward_widths)

    def model_configs(self, base: ModelConfig, propensity: bool = False) -> list[ModelConfig]:
        """``base`` with each reward layout of :attr:`reward_widths` and, with ``propensity`` (a
        model with a propensity network, on data with context), each of :attr:`propensity_inputs`."""
        inputs = self.propensity_inputs if propensity else (base.propensity_features,)
        if base.propensity_features == "context":  # a remedy that fixes what g sees
            inputs = ("context",)
        return [
            replace(
                base,
                reward_hidden=layout,
                propensity_features=features,
            )
            for features in inputs
            for layout in reward_layouts(self.reward_widths)
        ]


TREE_VARIANTS = (
    "naive",
    "naive_no_negative",
    "implicitrm_one_channel",
    "implicitrm_no_context",
    "implicitrm_channels",
    "implicitrm_users",
    "upu",
    "nnpu",
    "ips",
    "snips",
    "causalrm",
    "ubpr",
    "relmf",
    "supervised_ranks",
)
TREE_METRICS = ("sibling_agreement", "best_of_n", "length_bias")


@dataclass(frozen=True)
class TreeBenchmarkConfig:
    """Settings of the real-reaction benchmark; the help text is reused by the command line."""

    variants: tuple[str, ...] = field(
        default=TREE_VARIANTS, metadata={"help": "variants to fit: " + ", ".join(TREE_VARIANTS)}
    )
    folds: int = field(default=5, metadata={"help": "folds by tree: each variant is fit once per fold"})
    max_epochs: int = field(default=100, metadata={"help": "upper bound on epochs per fit"})
    reward_widths: tuple[str, ...] = field(
        default=("64", "32"),
        metadata={
            "help": "reward network hidden widths to choose from, each as comma-separated widths; every "
            "fit keeps the one with its best held-out score on its training trees (never the ranks)"
        },
    )
    resamples: int = field(default=1000, metadata={"help": "bootstrap resamples of whole trees"})
    seed: int = field(default=0, metadata={"help": "seed of the folds and of every fit"})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.variants) - set(TREE_VARIANTS))
        if unknown:
            raise ValueError(f"unknown variants {unknown}; choose from {', '.join(TREE_VARIANTS)}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        reward_layouts(self.reward_widths)

    def model_configs(self, base: ModelConfig) -> list[ModelConfig]:
        """``base`` with each reward layout of :attr:`reward_widths`."""
        return [replace(base, reward_hidden=layout) for layout in reward_layouts(self.reward_widths)]
