"""Every estimator the toolkit fits, by name: its family, the settings it applies to, what it needs.

All of them fit the same reward network ``f`` through :func:`pyro_irm.fit` and return the same
:class:`~pyro_irm.models.RewardModel`; they differ only in the objective. The Pyro family fits a
generative model by SVI; the loss family minimizes a risk built from :mod:`pyro_irm.models.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyro_irm.inference.nuisance import EstimatorConfig

Family = Literal["pyro", "loss"]
SETTINGS = ("implicit", "observational")


@dataclass(frozen=True)
class MethodSpec:
    """One estimator: ``family`` 'pyro' or 'loss', the ``settings`` it applies to, and a summary."""

    name: str
    family: Family
    settings: tuple[str, ...]
    summary: str
    needs_truth: bool = False

    def needs(self, setting: str, config: EstimatorConfig) -> frozenset[str]:
        """The nuisance quantities (see :func:`estimate_nuisance`) this method needs in ``setting``."""
        observational = setting == "observational"
        name = self.name
        if name in ("upu", "nnpu"):
            return frozenset({"class_prior"})
        if name in ("ips", "ubpr"):
            return frozenset({"propensity"})
        if name == "snips":
            return frozenset({"propensity"} if observational else {"propensity", "class_prior"})
        if name == "dr":
            return frozenset({"propensity", "imputation"})
        if name == "relmf":
            uses_fitted = observational or config.propensity == "given"
            return frozenset({"propensity"} if uses_fitted else {"relative_propensity"})
        if name == "causalrm":
            if not observational:
                return frozenset({"flip_rates"})
            extra = {
                "ips": {"propensity"},
                "snips": {"propensity"},
                "dr": {"propensity", "imputation"},
            }[config.causalrm_weighting]
            return frozenset({"flip_rates"} | extra)
        if name == "implicitrm" and observational:
            return frozenset({"flip_rates"})
        return frozenset()


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("naive", "pyro", SETTINGS, "BCE with the action as the label (no action = negative)"),
        MethodSpec("upu", "loss", SETTINGS, "unbiased PU risk, actions as labelled positives"),
        MethodSpec("nnpu", "loss", SETTINGS, "non-negative PU risk (Kiryo et al. 2017)"),
        MethodSpec("ips", "loss", SETTINGS, "inverse-propensity weighting, clipped"),
        MethodSpec("snips", "loss", SETTINGS, "self-normalized inverse-propensity weighting"),
        MethodSpec("dr", "loss", ("observational",), "doubly robust: imputed loss plus IPS correction"),
        MethodSpec("causalrm", "loss", SETTINGS, "noise-corrected loss with propensity weighting"),
        MethodSpec("ubpr", "loss", SETTINGS, "unbiased pairwise ranking within a prompt (Saito 2020)"),
        MethodSpec("relmf", "loss", SETTINGS, "Rel-MF: unbiased pointwise loss, popularity propensity"),
        MethodSpec("implicitrm", "pyro", SETTINGS, "the four-group Pyro model (ImplicitRM)"),
        MethodSpec("oracle", "pyro", SETTINGS, "BCE on the true preferences (the ceiling)", True),
    )
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def method_spec(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}") from None


def check_setting(name: str, setting: str) -> None:
    """Raise when ``name`` does not apply to ``setting``, saying why."""
    spec = method_spec(name)
    if setting not in spec.settings:
        raise ValueError(
            f"method {name!r} needs an observational log (FeedbackData.observed, --observed-col): "
            "its correction term has zero mean only where the log says which rows were observed"
        )
