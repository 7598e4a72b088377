"""How a fit is configured: training and the Bayesian head (the loss-based estimators' choices,
:class:`~pyro_irm.estimators.config.EstimatorConfig`, live with the estimators).

Nothing here imports torch, so that the command line can build its options (and answer ``--help``)
without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pyro_irm.estimators import ESTIMATORS, describe_methods
from pyro_irm.estimators.config import EstimatorConfig  # noqa: F401  (its old home)
from pyro_irm.models.config import GlobalGuideKind

Inference = Literal["enumerate", "amortized", "fused"]
GuideGradient = Literal["score_function", "enumerate"]
Strategy = Literal["ddp"]
Precision = Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class TrainConfig:
    """How a model is fit. The help text of each field is reused by the command line."""

    method: str = field(
        default="implicitrm",
        metadata={"help": describe_methods(), "choices": lambda: tuple(ESTIMATORS)},
    )
    inference: Inference = field(
        default="fused",
        metadata={
            "help": "implicitrm only: 'fused' (default) sums the four groups out exactly, from the "
            "model's own per-row program traced at each group (fastest); 'enumerate' computes the same "
            "marginal likelihood with Pyro's TraceEnum_ELBO; 'amortized' fits a stratification guide "
            "q(r, o | e, y)"
        },
    )
    guide_gradient: GuideGradient = field(
        default="enumerate",
        metadata={
            "help": "amortized only: 'enumerate' sums the guide's four groups exactly "
            "(TraceEnum_ELBO, no sampling variance); 'score_function' samples them "
            "(TraceGraph_ELBO with a learned per-row baseline), for latent spaces too large to sum"
        },
    )
    global_guide: GlobalGuideKind = field(
        default="auto",
        metadata={
            "help": "the guide of the model's global latents (user effects and their scale, flip rates, a "
            "component's own): 'map' a point estimate of each (AutoDelta), 'normal' a Normal posterior "
            "of each (AutoNormal), 'auto' MAP except hierarchical sites (effects whose scale is learned), "
            "which get a Normal"
        },
    )
    global_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "learning rate of the global latents' guide (default: --learning-rate), so that slow "
            "globals such as a learned scale can train while the networks settle"
        },
    )
    batch_size: int = field(default=1024, metadata={"help": "rows per SVI step"})
    max_epochs: int = field(default=100, metadata={"help": "upper bound on passes over the data"})
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW decoupled weight decay"})
    validation_fraction: float = field(
        default=0.1,
        metadata={
            "help": "rows held out for early stopping on the held-out ELBO, or on the method's own "
            "risk for loss-based methods (0 disables)"
        },
    )
    patience: int = field(
        default=5, metadata={"help": "epochs without held-out ELBO improvement before stopping"}
    )
    min_delta: float = field(
        default=1e-4, metadata={"help": "smallest held-out ELBO gain (nats per row) that counts"}
    )
    fit_labels: bool = field(
        default=False,
        metadata={
            "help": "implicitrm: use the explicit labels of the rows that have one as observed "
            "preference in the fit (off by default; never the labels you evaluate on)"
        },
    )
    check_identification: bool = field(
        default=True,
        metadata={
            "help": "latent-group fits with context: after the fit, measure on held-out rows whether the "
            "data decide the preference/engagement split, and warn with remedies where they do not "
            "(cheap: at most 20,000 rows each side)"
        },
    )
    restarts: int = field(
        default=1,
        metadata={
            "help": "fits from different initializations on the same split; the one with the best "
            "held-out score is kept (latent-class likelihoods have local optima)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of initialization, split and minibatches"})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda' or 'cuda:N'"})
    precision: Precision = field(
        default="float32",
        metadata={
            "help": "the networks' arithmetic: 'float32', or autocast to 'bfloat16' (CPU or GPU) or "
            "'float16' (GPU, with gradient scaling); the likelihood's log-space sums stay float32"
        },
    )
    devices: int = field(
        default=1,
        metadata={
            "help": "processes to train in, data-parallel on Lightning Fabric (one per GPU on CUDA, gloo "
            "on CPU); each holds the data and takes its share of every minibatch"
        },
    )
    strategy: Strategy = field(
        default="ddp",
        metadata={"help": "how several devices share the work: 'ddp' (distributed data parallel)"},
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar on a terminal"})
    checkpoint_dir: str | None = field(
        default=None,
        metadata={"help": "directory for a per-epoch checkpoint; a fit resumes from it if present"},
    )

    def __post_init__(self) -> None:
        choices = {
            "method": tuple(ESTIMATORS),
            "inference": ("enumerate", "amortized", "fused"),
            "guide_gradient": ("score_function", "enumerate"),
            "global_guide": ("auto", "map", "normal"),
        }
        if self.global_learning_rate is not None and not self.global_learning_rate > 0:
            raise ValueError(f"global_learning_rate must be positive, got {self.global_learning_rate}")
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("batch_size", "max_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {self.weight_decay}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in [0, 1), got {self.validation_fraction}")
        if self.precision not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"precision must be float32, bfloat16 or float16, got {self.precision!r}")
        if self.devices < 1:
            raise ValueError(f"devices must be at least 1, got {self.devices}")
        if self.strategy != "ddp":
            raise ValueError(f"strategy must be 'ddp', got {self.strategy!r}")
        if self.restarts < 1:
            raise ValueError(f"restarts must be at least 1, got {self.restarts}")
        if self.patience < 1:
            raise ValueError(f"patience must be at least 1, got {self.patience}")


HEAD_METHODS = ("network", "laplace", "svi", "nuts")


@dataclass(frozen=True)
class HeadConfig:
    """How the head is fit. The help text of each field is reused by the command line."""

    prior_scale: float = field(
        default=1.0,
        metadata={
            "help": "prior standard deviation of the last layer's w and b around the point fit's "
            "(laplace, svi, nuts; 'network' chooses its own by marginal likelihood)"
        },
    )
    svi_steps: int = field(default=2000, metadata={"help": "SVI steps (full batch)"})
    learning_rate: float = field(default=0.02, metadata={"help": "SVI Adam learning rate"})
    draws: int = field(default=1000, metadata={"help": "posterior draws per chain"})
    warmup: int = field(default=500, metadata={"help": "NUTS warm-up steps per chain"})
    chains: int = field(default=2, metadata={"help": "NUTS chains (run one after another)"})
    seed: int = field(default=0, metadata={"help": "seed"})
    progress: bool = field(default=False, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        for name in ("svi_steps", "draws", "chains"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.prior_scale <= 0 or self.learning_rate <= 0:
            raise ValueError("prior_scale and learning_rate must be positive")


FinetuneMode = Literal["lora", "full", "frozen"]


@dataclass(frozen=True)
class FinetuneConfig:
    """How the encoder is trained together with the heads. The help text is reused by the CLI."""

    mode: FinetuneMode = field(
        default="lora",
        metadata={
            "help": "'lora': low-rank adapters on the encoder's attention (peft); 'full': every encoder "
            "weight; 'frozen': the encoder fixed (the same loop, for comparison)"
        },
    )
    lora_rank: int = field(default=8, metadata={"help": "rank of each LoRA adapter"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (scale alpha / rank)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the adapters' input"})
    target_modules: tuple[str, ...] = field(
        default=(), metadata={"help": "module names that get adapters (default: peft's for the architecture)"}
    )
    encoder_learning_rate: float = field(
        default=1e-4, metadata={"help": "AdamW learning rate of the encoder's trained weights"}
    )
    accumulation_steps: int = field(
        default=1, metadata={"help": "minibatches whose gradients add up before each optimizer step"}
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "recompute the encoder's activations in the backward pass (less memory)"},
    )

    def __post_init__(self) -> None:
        if self.mode not in ("lora", "full", "frozen"):
            raise ValueError(f"mode must be 'lora', 'full' or 'frozen', got {self.mode!r}")
        if self.lora_rank < 1 or self.accumulation_steps < 1:
            raise ValueError("lora_rank and accumulation_steps must be at least 1")
        if self.encoder_learning_rate <= 0:
            raise ValueError(f"encoder_learning_rate must be positive, got {self.encoder_learning_rate}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}")
