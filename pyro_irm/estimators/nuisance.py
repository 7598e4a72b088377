"""Nuisance quantities of the loss-based estimators: propensity, class prior, flip rates, imputation.

Each is given (``EstimatorConfig``, ``FeedbackData.propensity``) or estimated from what a real log
has: the embeddings, context, actions and, in an observational log, the observation indicator. No
estimator here reads the truth or the explicit labels, except the propensity when told
``propensity_source='given'`` on simulated data without a propensity column.

Every estimate comes from a logistic regression (scikit-learn) over the embedding and the context,
cross-fitted: the prediction for a row comes from a model that did not train on it, so an
estimator that averages predictions over rows (Elkan and Noto's, the anchor points) is not flattered
by overfitting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from pyro_irm.data.feedback import FeedbackData
from pyro_irm.estimators.config import EstimatorConfig

logger = logging.getLogger(__name__)

# Flip rates and propensities are kept away from the values where the estimators divide by zero.
_MAX_FLIP_SUM = 0.95


@dataclass(frozen=True)
class Nuisance:
    """What the loss-based estimators need besides the reward network; None where not needed.

    Attributes:
        propensity: ``(N,)`` float32 P(o=1 | row), before clipping.
        relative_propensity: ``(N,)`` float32 Rel-MF's ``(relative action rate) ** 0.5``.
        class_prior: P(r = 1).
        eps1, eps0: flip rates P(y=0 | r=1) and P(y=1 | r=0).
        imputation: ``(N,)`` float32 imputed P(y = 1 | row) of the feedback value (DR).
        sources: how each quantity was obtained, for reports.
    """

    propensity: torch.Tensor | None = None
    relative_propensity: torch.Tensor | None = None
    class_prior: float | None = None
    eps1: float | None = None
    eps0: float | None = None
    imputation: torch.Tensor | None = None
    sources: dict[str, str] = field(default_factory=dict)


def _features(data: FeedbackData) -> np.ndarray:
    parts = [data.embeddings.numpy()]
    if data.context is not None:
        parts.append(data.context.numpy())
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def cross_fitted_probability(
    features: np.ndarray,
    target: np.ndarray,
    fit_rows: np.ndarray | None = None,
    folds: int = 2,
    regularization: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """``(N,)`` P(target = 1 | features) by logistic regression, cross-fitted over ``fit_rows``.

    Rows in ``fit_rows`` (default: all) get the prediction of the fold model that left them out;
    the other rows get the mean prediction of the fold models.
    """
    # scikit-learn loads here, not at import: fitting ImplicitRM never needs it (0.9 s saved)
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    num_rows = features.shape[0]
    fit_rows = np.arange(num_rows) if fit_rows is None else np.asarray(fit_rows)
    target = np.asarray(target, dtype=np.int64)
    classes = np.unique(target[fit_rows])
    if len(classes) < 2:
        return np.full(num_rows, float(classes[0]) if len(classes) else 0.5)
    prediction = np.zeros(num_rows)
    outside = np.ones(num_rows, dtype=bool)
    outside[fit_rows] = False
    splitter = KFold(n_splits=min(folds, len(fit_rows)), shuffle=True, random_state=seed)
    for train, held_out in splitter.split(fit_rows):
        rows = fit_rows[train]
        model = LogisticRegression(C=regularization, max_iter=1000)
        if len(np.unique(target[rows])) < 2:
            prediction[fit_rows[held_out]] = target[rows].mean()
            prediction[outside] += target[rows].mean() / splitter.get_n_splits()
            continue
        model.fit(features[rows], target[rows])
        prediction[fit_rows[held_out]] = model.predict_proba(features[fit_rows[held_out]])[:, 1]
        if outside.any():
            prediction[outside] += model.predict_proba(features[outside])[:, 1] / splitter.get_n_splits()
    return prediction


def relative_action_rate(action_probability: np.ndarray, power: float) -> np.ndarray:
    """``(s / s_max) ** power`` with ``s_max`` the 99th percentile of ``s``, capped at 1.

    Under ``y = r * o`` with r and o independent given the row, ``P(y = 1 | row)`` is the
    propensity times the preference rate; where the preference rate varies less across rows than
    the propensity, the relative action rate is the relative propensity (Saito et al. 2020 use item
    popularity the same way, with power 0.5).
    """
    top = max(float(np.quantile(action_probability, 0.99)), 1e-6)
    return np.clip(action_probability / top, 1e-6, 1.0) ** power


def elkan_noto_prior(action_probability: np.ndarray, actions: np.ndarray) -> float:
    """Class prior by Elkan and Noto (2008): ``c = mean P(y=1 | row)`` over rows with y = 1 (the
    labelling rate; exact when the positives that act are a uniform sample of the positives and
    the classes do not overlap, an underestimate of c, so an overestimate of the prior, where they
    do), then ``pi = mean(y) / c``, kept within ``[mean(y), 0.99]``."""
    positives = actions == 1
    if not positives.any():
        raise ValueError("actions: no row has y = 1, so no class prior can be estimated from them")
    labelling_rate = float(np.mean(action_probability[positives]))
    action_rate = float(np.mean(actions))
    return float(np.clip(action_rate / max(labelling_rate, 1e-6), action_rate, 0.99))


def anchor_flip_rates(value_probability: np.ndarray, quantile: float) -> tuple[float, float]:
    """CausalRM's anchor points: ``eps1 = 1 - P(y=1 | x)`` at its ``quantile`` (rows taken as surely
    positive), ``eps0 = P(y=1 | x)`` at ``1 - quantile`` (surely negative); their sum is kept
    below 0.95."""
    eps1 = float(np.clip(1.0 - np.quantile(value_probability, quantile), 0.0, _MAX_FLIP_SUM))
    eps0 = float(np.clip(np.quantile(value_probability, 1.0 - quantile), 0.0, _MAX_FLIP_SUM))
    excess = eps1 + eps0 - _MAX_FLIP_SUM
    if excess > 0:
        eps1, eps0 = eps1 - excess / 2, eps0 - excess / 2
    return eps1, eps0


def given_propensity(data: FeedbackData) -> torch.Tensor:
    """The data's propensity column, else the simulated truth's P(o = 1 | row)."""
    if data.propensity is not None:
        return data.propensity
    if data.truth is not None:
        return data.truth.propensity_probability
    raise ValueError(
        "propensity_source='given' needs FeedbackData.propensity (a --propensity-col) or simulated truth; "
        "use propensity_source='fit' to estimate it"
    )


def estimate_nuisance(
    data: FeedbackData, needs: set[str] | frozenset[str], config: EstimatorConfig, seed: int = 0
) -> Nuisance:
    """Estimate (or take as given) each quantity in ``needs``: any of 'propensity',
    'relative_propensity', 'class_prior', 'flip_rates', 'imputation'."""
    unknown = set(needs) - {"propensity", "relative_propensity", "class_prior", "flip_rates", "imputation"}
    if unknown:
        raise ValueError(f"unknown nuisance quantities {sorted(unknown)}")
    features = _features(data) if needs else None
    actions = data.actions.numpy()
    observed = None if data.observed is None else data.observed.numpy()
    observed_rows = None if observed is None else np.flatnonzero(observed == 1)
    memo: dict[str, np.ndarray] = {}

    def probability(name: str, target: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        if name not in memo:
            memo[name] = cross_fitted_probability(
                features, target, rows, config.folds, config.regularization, seed
            )
        return memo[name]

    def action_probability() -> np.ndarray:  # P(y = 1 | row) over every row
        return probability("action", actions, None)

    values: dict = {}
    sources: dict[str, str] = {}
    if "propensity" in needs:
        if config.propensity_source == "given":
            values["propensity"] = given_propensity(data).float()
            sources["propensity"] = "given"
        elif observed is not None:
            values["propensity"] = _tensor(probability("observed", observed, None))
            sources["propensity"] = "logistic regression of o"
        else:
            rate = relative_action_rate(action_probability(), config.propensity_power)
            values["propensity"] = _tensor(rate)
            sources["propensity"] = f"relative action rate ** {config.propensity_power:g}"
    if "relative_propensity" in needs:
        values["relative_propensity"] = _tensor(relative_action_rate(action_probability(), 0.5))
        sources["relative_propensity"] = "relative action rate ** 0.5 (Rel-MF)"
    if "class_prior" in needs:
        if config.class_prior is not None:
            values["class_prior"], sources["class_prior"] = config.class_prior, "given"
        else:
            values["class_prior"] = elkan_noto_prior(action_probability(), actions)
            sources["class_prior"] = "Elkan-Noto"
    if "flip_rates" in needs:
        estimated = None
        if config.eps1 is None or config.eps0 is None:
            value_probability = (
                action_probability()
                if observed_rows is None
                else probability("value", actions, observed_rows)[observed_rows]
            )
            estimated = anchor_flip_rates(value_probability, config.anchor_quantile)
        values["eps1"] = config.eps1 if config.eps1 is not None else estimated[0]
        values["eps0"] = config.eps0 if config.eps0 is not None else estimated[1]
        if values["eps1"] + values["eps0"] >= 1.0:
            raise ValueError(f"flip rates {values['eps1']} + {values['eps0']} must sum below 1")
        sources["flip_rates"] = (
            "given" if estimated is None else f"anchor points (q={config.anchor_quantile})"
        )
    if "imputation" in needs:
        if observed_rows is None:
            raise ValueError("imputation (doubly robust) needs an observational log (FeedbackData.observed)")
        values["imputation"] = _tensor(probability("value", actions, observed_rows))
        sources["imputation"] = "logistic regression of y on observed rows"
    logger.info("nuisance: %s", sources)
    return Nuisance(**values, sources=sources)


def _tensor(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
