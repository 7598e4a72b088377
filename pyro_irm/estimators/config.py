"""The loss-based estimators' choices: propensity, class prior, flip rates, weighting. Nothing here
imports torch, so that the command line can build its options without loading it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PropensitySource = Literal["fit", "given"]
Weighting = Literal["ips", "snips", "dr"]


@dataclass(frozen=True)
class EstimatorConfig:
    """Choices of the loss-based estimators. The help text of each field is reused by the CLI."""

    propensity_source: PropensitySource = field(
        default="fit",
        metadata={
            "help": "'fit': estimate P(o=1 | row) from the log; 'given': the data's propensity column "
            "(or, on simulated data, the true propensity)"
        },
    )
    propensity_clip: float = field(
        default=0.1, metadata={"help": "propensities below this are raised to it (CausalRM: 0.1)"}
    )
    propensity_power: float = field(
        default=1.0,
        metadata={
            "help": "implicit logs: the fitted propensity is (relative action rate) ** power; "
            "relmf always uses 0.5, Rel-MF's choice"
        },
    )
    class_prior: float | None = field(
        default=None,
        metadata={"help": "P(r=1) for uPU, nnPU and SNIPS; estimated (Elkan and Noto) when not given"},
    )
    eps1: float | None = field(
        default=None,
        metadata={"help": "CausalRM flip rate P(y=0 | r=1); estimated by anchor points when not given"},
    )
    eps0: float | None = field(
        default=None,
        metadata={"help": "CausalRM flip rate P(y=1 | r=0); estimated by anchor points when not given"},
    )
    causalrm_weighting: Weighting = field(
        default="ips",
        metadata={"help": "observational logs: how causalrm weights its noise-corrected loss"},
    )
    nnpu_beta: float = field(default=0.0, metadata={"help": "nnPU: tolerated negative risk"})
    nnpu_gamma: float = field(default=1.0, metadata={"help": "nnPU: step scale when the risk is negative"})
    anchor_quantile: float = field(
        default=0.97, metadata={"help": "anchor points: the quantile taken as 'surely positive'"}
    )
    folds: int = field(default=2, metadata={"help": "cross-fitting folds of every nuisance model"})
    regularization: float = field(
        default=1.0, metadata={"help": "inverse L2 strength C of the nuisance logistic regressions"}
    )

    def __post_init__(self) -> None:
        if self.propensity_source not in ("fit", "given"):
            raise ValueError(f"propensity_source must be 'fit' or 'given', got {self.propensity_source!r}")
        if self.causalrm_weighting not in ("ips", "snips", "dr"):
            raise ValueError(
                f"causalrm_weighting must be 'ips', 'snips' or 'dr', got {self.causalrm_weighting!r}"
            )
        if not 0.0 < self.propensity_clip <= 1.0:
            raise ValueError(f"propensity_clip must lie in (0, 1], got {self.propensity_clip}")
        if self.propensity_power <= 0:
            raise ValueError(f"propensity_power must be positive, got {self.propensity_power}")
        if self.class_prior is not None and not 0.0 < self.class_prior < 1.0:
            raise ValueError(f"class_prior must lie in (0, 1), got {self.class_prior}")
        for name in ("eps1", "eps0"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value}")
        if self.eps1 is not None and self.eps0 is not None and self.eps1 + self.eps0 >= 1.0:
            raise ValueError("eps1 + eps0 must be below 1 for the feedback to carry information")
        if not 0.5 < self.anchor_quantile < 1.0:
            raise ValueError(f"anchor_quantile must lie in (0.5, 1), got {self.anchor_quantile}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.nnpu_beta < 0 or self.nnpu_gamma <= 0:
            raise ValueError("nnpu_beta must be non-negative and nnpu_gamma positive")
