"""A fit as ArviZ data: the one module that imports ArviZ.

ArviZ 0.x (what Python 3.11 installs) builds ``InferenceData`` with
``az.from_dict(posterior=..., observed_data=..., ...)``; ArviZ 1.x (Python >= 3.12) builds an
``xarray.DataTree`` with ``az.from_dict({group: {name: array}}, ...)``. :func:`from_groups` hides the
difference, and both results are indexed the same way (``idata["posterior"]["reward"]``), so the
rest of the package never asks which ArviZ it has.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from pyro_irm.data.feedback import FeedbackData
from pyro_irm.groups import GROUP_NAMES
from pyro_irm.models.head_posterior import HeadPosterior
from pyro_irm.models.reward_model import RewardModel


def _arviz():
    with warnings.catch_warnings():
        # ArviZ 0.2x announces its refactor with a FutureWarning on import.
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def arviz_major_version() -> int:
    return int(_arviz().__version__.split(".")[0])


def from_groups(
    groups: dict[str, dict[str, np.ndarray]],
    dims: dict[str, list[str]] | None = None,
    coords: dict[str, Any] | None = None,
):
    """ArviZ data from ``{group: {variable: array}}``: ``InferenceData`` on ArviZ 0.x, an
    ``xarray.DataTree`` on 1.x. Posterior arrays lead with ``(chain, draw)``."""
    az = _arviz()
    if arviz_major_version() >= 1:
        return az.from_dict(groups, dims=dims, coords=coords)
    return az.from_dict(**groups, dims=dims, coords=coords)


POINT_GROUP = "point_estimate"


def with_point_estimates(data, variables: dict[str, np.ndarray], dims: dict[str, list[str]], coords: dict):
    """``data`` with a ``point_estimate`` group: a point fit's row quantities, without the chain and
    draw dimensions that a posterior sample has (a point fit has no draws, and a fake chain of one
    would give ``az.summary`` a standard deviation of NaN)."""
    import xarray as xr

    dataset = xr.Dataset(
        {name: (dims[name], values) for name, values in variables.items()},
        coords={k: v for k, v in coords.items() if any(k in dims[n] for n in variables)},
    )
    if arviz_major_version() >= 1:
        data[POINT_GROUP] = xr.DataTree(dataset)
        return data
    with warnings.catch_warnings():
        # ArviZ 0.x names the groups of its scheme and warns about any other.
        warnings.simplefilter("ignore", UserWarning)
        data.add_groups({POINT_GROUP: dataset})
    return data


def has_group(data, name: str) -> bool:
    groups = data.groups() if callable(getattr(data, "groups", None)) else list(data.children)
    return name in groups or f"/{name}" in groups


def summary(data, var_names: list[str] | None = None, **kwargs):
    """``az.summary`` on either kind of ArviZ data (a pandas DataFrame). For a point fit (a
    ``point_estimate`` group and no posterior) the table has the point values as ``mean`` and no
    spread: there is no sample to summarize."""
    if not has_group(data, "posterior") and has_group(data, POINT_GROUP):
        import pandas as pd

        frames = []
        for name in var_names or list(data[POINT_GROUP].data_vars):
            values = data[POINT_GROUP][name]
            flat = values.to_series()
            index = [
                f"{name}[{', '.join(map(str, k if isinstance(k, tuple) else (k,)))}]" for k in flat.index
            ]
            frames.append(pd.DataFrame({"mean": flat.to_numpy()}, index=index))
        return pd.concat(frames)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.filterwarnings("ignore", "Degrees of freedom <= 0", RuntimeWarning)
        return _arviz().summary(data, var_names=var_names, **kwargs)


def row_values(data, name: str) -> np.ndarray:
    """A row quantity (``group_probability``, ``reward``, ...) as a plain array: averaged over the
    posterior draws where there are draws, the point value for a point fit."""
    if has_group(data, "posterior"):
        return data["posterior"][name].mean(dim=("chain", "draw")).values
    return data[POINT_GROUP][name].values


def _numpy(values: torch.Tensor | None) -> np.ndarray | None:
    return None if values is None else values.detach().cpu().numpy()


@torch.no_grad()
def _head_draws(reward_model: RewardModel, data: FeedbackData, max_draws: int):
    """Posterior variables ``(chain, draw, row[, group])`` and the log-likelihood under each draw of
    a Bayesian head: the reward draws give the group posterior and ``log p(y | row)`` per draw."""
    model = reward_model.model
    device = model.device
    rows = reward_model.prepare_rows(
        data.embeddings, data.actions, data.context, data.observed, data.users, None
    )
    embeddings, actions = rows["embeddings"].to(device), rows["actions"].to(device)
    context = None if rows["context"] is None else rows["context"].to(device)
    observed = None if rows["observed"] is None else rows["observed"].to(device)
    extras = {k: v.to(device) for k, v in rows["extras"].items()}
    draws = reward_model.sample_rewards(data.embeddings, max_draws)  # (chains, draws, N)
    groups, likelihood = [], []
    for reward in draws.reshape(-1, draws.shape[-1]):
        joint = model.group_log_joint_given_reward(
            reward.to(device), embeddings, actions, context, observed, **extras
        )
        groups.append(torch.softmax(joint, -1).cpu())
        likelihood.append(torch.logsumexp(joint, -1).cpu())
    shape = tuple(draws.shape[:2])
    stack = lambda values: torch.stack(values).reshape(*shape, *values[0].shape).numpy()  # noqa: E731
    reward = draws.numpy()
    posterior = {
        "group_probability": stack(groups),
        "reward": reward,
        "preference_probability": 1.0 / (1.0 + np.exp(-reward)),
    }
    return posterior, stack(likelihood)


def to_inference_data(
    reward_model: RewardModel,
    data: FeedbackData,
    rows: torch.Tensor | np.ndarray | None = None,
    source: str = "exact",
    max_draws: int = 200,
):
    """The fit's view of ``data`` (rows ``rows``, default all) as ArviZ data.

    Groups and variables (``row`` indexes the data's rows; ``group`` is ``GROUP_NAMES``):

    * a point fit: ``point_estimate`` with ``group_probability`` ``(row, group)``, the posterior
      over the four groups given each row's actions; ``reward`` ``(row,)``, the logit ``f(e)``;
      ``preference_probability``; ``log_likelihood``, the exact ``log p(y | row)`` (groups summed
      out; ``az.from_pyro`` would drop it for an enumerated model). No chain or draw: there is no
      sample. :func:`row_values` reads a variable from either layout.
    * with a Bayesian head (:meth:`RewardModel.fit_bayesian_head`): ``posterior`` with the same
      variables over the head's chains and up to ``max_draws`` draws per chain (the group
      probabilities computed exactly for each draw), and ``log_likelihood``: ``action``
      ``(chain, draw, row)``.
    * ``observed_data``: ``action`` and, for an observational log, ``observed``.
    * ``constant_data``: for simulated data the truth (``true_group``, ``true_preference``,
      ``true_engagement``, ``true_propensity_probability``, ``score``), and explicit ``label``\\ s.

    Args:
        source: 'exact' (Bayes' rule over the fitted model) or 'guide' (the amortized network).
    """
    index = torch.arange(len(data)) if rows is None else torch.as_tensor(np.asarray(rows)).long()
    subset = data.subset(index)
    embeddings, actions, context = subset.embeddings, subset.actions, subset.context
    groups = reward_model.posterior_groups(
        embeddings, actions, context, source=source, observed=subset.observed, users=subset.users
    )
    reward = reward_model.score(embeddings, context)
    log_likelihood = reward_model.log_likelihood(
        embeddings, actions, context, subset.observed, users=subset.users
    )
    point = {
        "group_probability": _numpy(groups),
        "reward": _numpy(reward),
        "preference_probability": _numpy(torch.sigmoid(reward)),
        "log_likelihood": _numpy(log_likelihood),
    }
    head = getattr(reward_model, "head_posterior", None)
    payload: dict[str, dict[str, np.ndarray]] = {
        # "action" is the row's acted-or-not (any positive channel); with several channels each
        # channel's value is in "channel_action" (row, channel).
        "observed_data": {"action": _numpy(subset.action)},
    }
    if head is not None and source == "exact":
        posterior, likelihood = _head_draws(reward_model, subset, max_draws)
        payload["posterior"] = posterior
        payload["log_likelihood"] = {"action": likelihood}
    dims = {
        "group_probability": ["row", "group"],
        "reward": ["row"],
        "preference_probability": ["row"],
        "log_likelihood": ["row"],
        "action": ["row"],
    }
    coords = {"row": index.numpy(), "group": list(GROUP_NAMES)}
    if subset.num_channels > 1:
        payload["observed_data"]["channel_action"] = _numpy(subset.action_matrix)
        dims["channel_action"] = ["row", "channel"]
        coords["channel"] = [c.name for c in subset.channels]
    if subset.observed is not None:
        payload["observed_data"]["observed"] = _numpy(subset.observed)
        dims["observed"] = ["row"]
    constant = _constant_data(subset)
    if constant:
        payload["constant_data"] = constant
        dims.update({name: ["row"] for name in constant})
    data = from_groups(payload, dims=dims, coords=coords)
    if "posterior" in payload:
        return data
    return with_point_estimates(data, point, dims, coords)


def _constant_data(subset: FeedbackData) -> dict[str, np.ndarray]:
    """What the rows carry besides actions: the simulated truth, explicit labels."""
    constant: dict[str, np.ndarray] = {}
    if subset.truth is not None:
        truth = subset.truth
        constant.update(
            true_group=_numpy(truth.group),
            true_preference=_numpy(truth.preference),
            true_engagement=_numpy(truth.engagement),
            true_propensity_probability=_numpy(truth.propensity_probability),
            score=_numpy(truth.score),
        )
    if subset.labels is not None:
        constant["label"] = _numpy(subset.labels)
    return constant


def head_inference_data(posterior: HeadPosterior):
    """A Bayesian last layer's draws as ArviZ data: ``weight`` ``(chain, draw, feature)`` and
    ``bias`` ``(chain, draw)``; a Laplace or SVI head has one chain, NUTS one per chain run. (A
    posterior over the whole network has no per-weight draws to show: :func:`to_inference_data`
    gives its per-row reward draws.)"""
    if not isinstance(posterior, HeadPosterior):
        raise TypeError(
            f"head_inference_data takes a last-layer posterior, got {posterior.method!r}: use "
            "to_inference_data(reward_model, data) for the per-row reward draws"
        )
    return from_groups(
        {"posterior": {"weight": posterior.weight.numpy(), "bias": posterior.bias.numpy()}},
        dims={"weight": ["feature"]},
        coords={"feature": np.arange(posterior.weight.shape[-1])},
    )
