"""Training configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Method = Literal[
    "naive", "upu", "nnpu", "ips", "snips", "dr", "causalrm", "ubpr", "relmf", "implicitrm", "oracle"
]
Inference = Literal["enumerate", "amortized", "fused"]
GuideGradient = Literal["score_function", "enumerate"]


@dataclass(frozen=True)
class TrainConfig:
    """How a model is fit. The help text of each field is reused by the command line."""

    method: Method = field(
        default="implicitrm",
        metadata={
            "help": "implicitrm (four groups), naive (y as the label), oracle (true labels), or a "
            "baseline: upu, nnpu, ips, snips, dr, causalrm, ubpr, relmf"
        },
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
    restarts: int = field(
        default=1,
        metadata={
            "help": "fits from different initializations on the same split; the one with the best "
            "held-out score is kept (latent-class likelihoods have local optima)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of initialization, split and minibatches"})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda' or 'cuda:N'"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar on a terminal"})
    checkpoint_dir: str | None = field(
        default=None,
        metadata={"help": "directory for a per-epoch checkpoint; a fit resumes from it if present"},
    )

    def __post_init__(self) -> None:
        from pyro_irm.inference.methods import METHOD_NAMES

        choices = {
            "method": METHOD_NAMES,
            "inference": ("enumerate", "amortized", "fused"),
            "guide_gradient": ("score_function", "enumerate"),
        }
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
        if self.restarts < 1:
            raise ValueError(f"restarts must be at least 1, got {self.restarts}")
        if self.patience < 1:
            raise ValueError(f"patience must be at least 1, got {self.patience}")
