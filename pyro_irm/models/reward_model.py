"""The product of a fit: a reward model that scores rows, explains them by group, and round-trips."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pyro_irm.atomic import atomic_directory
from pyro_irm.channels import DEFAULT_CHANNELS, ChannelSpec
from pyro_irm.data.feedback import as_float_tensor, first_non_finite
from pyro_irm.models.base import FeedbackModel
from pyro_irm.models.components import (
    class_path,
    constructor_settings,
    describe,
    findable_path,
    load_class,
    rebuild,
)
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.guides import StratificationGuide
from pyro_irm.models.head_posterior import HeadPosterior, NetworkPosterior

FORMAT_VERSION = 2
WEIGHTS_FILE = "weights.safetensors"
SPREAD_PREFIX = "global_spread."  # then "<site>/<sd|q05|q95>"
CONFIG_FILE = "reward_model.json"


class RewardModel:
    """A fitted reward model.

    ``score`` gives the reward ``f(e)`` (a logit; ``sigmoid`` of it is P(preferred)).
    ``posterior_groups`` gives each row's probabilities over the four groups given its action.

    Args:
        model: the fitted generative model (holds f, and g and the channel where it has them).
        method: 'implicitrm', 'naive' or 'oracle'.
        guide: the amortized stratification guide, when the fit used one.
        global_spread: how uncertain the fit left each global latent, ``{site: {"sd", "q05",
            "q95"}}`` (:func:`~pyro_irm.models.guides.global_spread`); empty under MAP. The point
            estimates themselves live on the model (``model.point_values()``).
    """

    def __init__(
        self,
        model: FeedbackModel,
        method: str,
        guide: StratificationGuide | None = None,
        global_spread: dict[str, dict[str, torch.Tensor]] | None = None,
    ):
        self.model = model.eval()
        self.method = method
        self.guide = None if guide is None else guide.eval()
        self.head_posterior = None
        self.global_spread = dict(global_spread or {})

    def global_posterior(self) -> dict[str, dict[str, torch.Tensor]]:
        """Each global latent's posterior as the fit left it: ``{site: {"median", "sd", "q05",
        "q95"}}``, each of the site's shape; under MAP the spread is zero and the quantiles equal
        the median."""
        summary = {}
        for site, median in self.model.point_values().items():
            spread = self.global_spread.get(site)
            if spread is None:
                spread = {"sd": torch.zeros_like(median), "q05": median, "q95": median}
            summary[site] = {"median": median, **spread}
        return summary

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def embedding_dim(self) -> int:
        return self.model.embedding_dim

    @property
    def context_dim(self) -> int:
        return self.model.context_dim

    def _checked(self, embeddings, context) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validated inputs: the right width, and finite (a NaN would score as NaN silently)."""
        embeddings = as_float_tensor("embeddings", embeddings)
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_dim:
            raise ValueError(
                f"embeddings: expected shape (rows, {self.embedding_dim}), got {tuple(embeddings.shape)}"
            )
        first_non_finite("embeddings", embeddings)
        if context is not None:
            context = as_float_tensor("context", context)
            context = context[:, None] if context.dim() == 1 else context
            first_non_finite("context", context)
        return embeddings, context

    @torch.no_grad()
    def _batched(self, fn, tensors: list[torch.Tensor | None], batch_size: int) -> torch.Tensor:
        device = self.model.device
        num_rows = tensors[0].shape[0]
        outputs = []
        for start in range(0, num_rows, batch_size):
            chunk = [None if t is None else t[start : start + batch_size].to(device) for t in tensors]
            outputs.append(fn(*chunk).float().cpu())
        return torch.cat(outputs)

    def score(
        self,
        embeddings: torch.Tensor | np.ndarray,
        context: torch.Tensor | np.ndarray | None = None,
        batch_size: int = 65_536,
    ) -> torch.Tensor:
        """Rewards ``f(e)``: ``(N, D) -> (N,)`` float32 logits on the CPU."""
        embeddings, context = self._checked(embeddings, context)
        return self._batched(self.model.reward_logits, [embeddings, context], batch_size)

    def preference_probability(
        self, embeddings: torch.Tensor | np.ndarray, context=None, batch_size: int = 65_536
    ) -> torch.Tensor:
        """P(preferred) = ``sigmoid(f(e))``: ``(N,)``."""
        return torch.sigmoid(self.score(embeddings, context, batch_size))

    def _row_vector(self, name: str, values, num_rows: int) -> torch.Tensor | None:
        if values is None:
            return None
        if name == "users":
            vector = torch.as_tensor(np.asarray(values)).reshape(-1).long()
        else:
            vector = as_float_tensor(name, values).reshape(-1)
        if vector.shape[0] != num_rows:
            raise ValueError(f"{name}: {vector.shape[0]} rows but embeddings has {num_rows}")
        return vector

    def _actions(self, actions, num_rows: int) -> torch.Tensor:
        actions = as_float_tensor("actions", actions)
        if actions.dim() == 1:
            actions = actions[:, None]
        channels = len(getattr(self.model, "channels", ())) or 1
        if actions.dim() != 2 or actions.shape[0] != num_rows or actions.shape[1] != channels:
            raise ValueError(
                f"actions: expected shape ({num_rows}, {channels}) (one column per channel: "
                f"{', '.join(c.name for c in self.channels)}), got {tuple(actions.shape)}"
            )
        return actions

    @property
    def channels(self) -> tuple[ChannelSpec, ...]:
        """The action channels the model was fit on (one for single-action methods)."""
        return tuple(getattr(self.model, "channel_specs", DEFAULT_CHANNELS))

    def posterior_groups(
        self,
        embeddings: torch.Tensor | np.ndarray,
        actions: torch.Tensor | np.ndarray,
        context: torch.Tensor | np.ndarray | None = None,
        source: str = "exact",
        batch_size: int = 65_536,
        observed: torch.Tensor | np.ndarray | None = None,
        users: torch.Tensor | np.ndarray | None = None,
        labels: torch.Tensor | np.ndarray | None = None,
    ) -> torch.Tensor:
        """``P(group | row, y)`` in ``GROUP_NAMES`` order: ``(N, D), (N, K) -> (N, 4)``.

        Args:
            actions: ``(N, K)`` in the order of :attr:`channels` (``(N,)`` for one channel).
            source: 'exact' sums the fitted generative model over the four groups (Bayes' rule);
                'guide' reads the amortized stratification network (fits with a guide only).
            observed: ``(N,)`` logged observation indicator o of an observational log; the groups
                whose o disagrees then get probability 0.
            users: ``(N,)`` user indices of a model with user effects (-1: unseen, the prior mean).
            labels: ``(N,)`` explicit preference labels (NaN where absent) to condition on.
        """
        if source == "exact":
            fn = self.model.posterior_groups
        elif source == "guide":
            if self.guide is None:
                raise ValueError("source='guide' needs a fit with inference='amortized'")
            fn = self.guide.posterior_groups
        else:
            raise ValueError(f"source must be 'exact' or 'guide', got {source!r}")
        return self._per_row(fn, embeddings, actions, context, observed, users, labels, batch_size)

    def _per_row(self, fn, embeddings, actions, context, observed, users, labels, batch_size: int):
        """``fn(embeddings, actions, context, observed, **extras)`` over validated rows, in batches."""
        rows = self.prepare_rows(embeddings, actions, context, observed, users, labels)
        extras = rows["extras"]
        names = sorted(extras)
        return self._batched(
            lambda e, y, c, o, *values: fn(e, y, c, o, **dict(zip(names, values, strict=True))),
            [
                rows["embeddings"],
                rows["actions"],
                rows["context"],
                rows["observed"],
                *(extras[n] for n in names),
            ],
            batch_size,
        )

    def log_likelihood(
        self,
        embeddings: torch.Tensor | np.ndarray,
        actions: torch.Tensor | np.ndarray,
        context: torch.Tensor | np.ndarray | None = None,
        observed: torch.Tensor | np.ndarray | None = None,
        batch_size: int = 65_536,
        users: torch.Tensor | np.ndarray | None = None,
        labels: torch.Tensor | np.ndarray | None = None,
    ) -> torch.Tensor:
        """Exact ``log p(y | row)`` (``log p(o, y | row)`` with ``observed``), groups summed out: ``(N,)``."""
        return self._per_row(
            self.model.log_marginal, embeddings, actions, context, observed, users, labels, batch_size
        )

    def head_features(self, embeddings: torch.Tensor | np.ndarray, batch_size: int = 65_536) -> torch.Tensor:
        """``(N, H)`` inputs of the reward network's last layer (the features a Bayesian head uses)."""
        embeddings, _ = self._checked(embeddings, None)
        body = torch.nn.Sequential(*list(self.model.reward_net)[:-1])
        return self._batched(lambda e: body(e), [embeddings], batch_size)

    def prepare_rows(self, embeddings, actions, context=None, observed=None, users=None, labels=None) -> dict:
        """Validated row tensors as the model takes them: ``embeddings``, ``actions``, ``context``,
        ``observed`` and ``extras`` (``users``, ``labels`` where given)."""
        embeddings, context = self._checked(embeddings, context)
        num_rows = embeddings.shape[0]
        actions = self._actions(actions, num_rows)
        if not self.model.observes_channels:
            actions = actions[:, 0]
        return {
            "embeddings": embeddings,
            "actions": actions,
            "context": context,
            "observed": self._row_vector("observed", observed, num_rows),
            "extras": _extras(
                self._row_vector("users", users, num_rows), self._row_vector("labels", labels, num_rows)
            ),
        }

    def _posterior(self):
        if getattr(self, "head_posterior", None) is None:
            raise ValueError(
                "reward intervals need a Bayesian head: model.head_posterior = fit_bayesian_head(model, ...)"
            )
        return self.head_posterior

    def sample_rewards(
        self, embeddings: torch.Tensor | np.ndarray, draws: int | None = None, batch_size: int = 4096
    ) -> torch.Tensor:
        """``(chains, draws, N)`` posterior draws of the reward logit (needs :meth:`fit_bayesian_head`);
        ``draws``: at most this many per chain."""
        posterior = self._posterior()
        embeddings, _ = self._checked(embeddings, None)
        network = self.model.reward_net
        rows_first = lambda e: posterior.sample_rewards(network, e, draws).permute(2, 0, 1)  # noqa: E731
        return self._batched(rows_first, [embeddings], batch_size).permute(1, 2, 0)

    def reward_draws(self, embeddings: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``(S, N)`` posterior draws of the reward logit, chains stacked."""
        draws = self.sample_rewards(embeddings)
        return draws.reshape(-1, draws.shape[-1])

    def reward_interval(
        self, embeddings: torch.Tensor | np.ndarray, probability: float = 0.9
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-row ``(mean, low, high)`` of the reward logit under the Bayesian head: the Gaussian's
        exact quantiles for the network posterior, the draws' for a last-layer one."""
        posterior = self._posterior()
        tail = (1 - probability) / 2
        if isinstance(posterior, NetworkPosterior):
            embeddings, _ = self._checked(embeddings, None)
            network = self.model.reward_net
            moments = lambda e: torch.stack(posterior.reward_moments(network, e), dim=1)  # noqa: E731
            mean, sd = self._batched(moments, [embeddings], 65_536).unbind(1)
            z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - tail)).item()
            return mean, mean - z * sd, mean + z * sd
        draws = self.reward_draws(embeddings)
        return draws.mean(0), draws.quantile(tail, dim=0), draws.quantile(1 - tail, dim=0)

    def to(self, device: str | torch.device) -> RewardModel:
        self.model.to(device)
        self.global_spread = {
            site: {stat: value.to(device) for stat, value in values.items()}
            for site, values in self.global_spread.items()
        }
        if self.guide is not None:
            self.guide.to(device)
        return self

    def save(self, path: str | Path) -> Path:
        """Write ``weights.safetensors`` and ``reward_model.json`` into the directory ``path``, whole
        or not at all (an earlier saved model there is replaced)."""
        target = Path(path)
        with atomic_directory(target, marker=CONFIG_FILE) as path:
            self._write(path)
        return target

    def _write(self, path: Path) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.guide is not None:
            tensors.update({f"guide.{k}": v for k, v in self.guide.state_dict().items()})
        for site, values in self.global_spread.items():
            tensors.update({f"{SPREAD_PREFIX}{site}/{stat}": value for stat, value in values.items()})
        head = self.head_posterior
        if head is not None:
            tensors.update(head.tensors())
        # Cloning breaks the sharing of the channel between model and guide, which safetensors refuses.
        save_file(
            {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
            str(path / WEIGHTS_FILE),
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "context_dim": self.context_dim,
            "has_guide": self.guide is not None,
            "channels": [asdict(c) for c in self.channels],
            "num_users": int(getattr(self.model, "num_users", 0)),
            **saved_components(self.model, self.guide),
            "head_method": None if head is None else head.method,
            "head": None if head is None else head.meta(),
            "model_config": asdict(self.config),
        }
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", trust: tuple[str, ...] = ()
    ) -> RewardModel:
        """Read a directory written by :meth:`save`; weights load through safetensors. The classes
        it names load only from pyro_irm, the modules in ``trust`` (for example the module holding
        your own channel) and those trusted already (:func:`~pyro_irm.models.components.trust_modules`):
        a saved model runs no code you did not name."""
        from pyro_irm.models.components import trust_modules

        trust_modules(*trust)
        path = Path(path)
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path}: no saved reward model here (missing {CONFIG_FILE})")
        try:
            meta = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{config_path}: not valid JSON ({error}); not written by pyro_irm") from None
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            version = meta.get("format_version") if isinstance(meta, dict) else None
            raise ValueError(f"{config_path}: format_version {version} is not {FORMAT_VERSION}")
        try:
            return cls._from_saved(path, meta, config_path, device)
        except (KeyError, TypeError, RuntimeError, SafetensorError, OSError) as error:
            raise ValueError(
                f"{path}: the saved reward model does not load ({type(error).__name__}: {str(error)[:300]}); "
                f"its {CONFIG_FILE} or {WEIGHTS_FILE} is damaged or from another model"
            ) from None

    @classmethod
    def _from_saved(cls, path: Path, meta: dict, config_path: Path, device) -> RewardModel:
        config_fields = dict(meta["model_config"])
        for key in ("reward_hidden", "propensity_hidden", "guide_hidden"):
            config_fields[key] = tuple(config_fields[key])
        config = ModelConfig(**config_fields)
        model = _saved_model(meta, config, config_path)
        tensors = load_file(str(path / WEIGHTS_FILE))
        if "model.user_effect" in tensors:  # saved when user effects were a parameter of the model
            tensors["model.point_globals.user_effect"] = tensors.pop("model.user_effect")
        model.load_state_dict(_strip(tensors, "model."))
        guide = None
        if meta["has_guide"]:
            described = meta.get("guide") or {"class": class_path(StratificationGuide), "settings": {}}
            guide = rebuild(described, model, base=torch.nn.Module, where=config_path)
            guide.load_state_dict(_strip(tensors, "guide."))
        spread: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in _strip(tensors, SPREAD_PREFIX).items():
            site, stat = key.rsplit("/", 1)
            spread.setdefault(site, {})[stat] = value
        loaded = cls(model, meta["method"], guide, spread).to(device)
        if meta.get("head_method") is not None:
            kind = NetworkPosterior if meta["head_method"] == "network" else HeadPosterior
            loaded.head_posterior = kind.from_tensors(
                tensors, {"method": meta["head_method"], **(meta.get("head") or {})}
            )
        return loaded


_MODEL_ARGUMENTS = ("embedding_dim", "context_dim", "config", "channels", "num_users", "propensity")


def saved_components(model: FeedbackModel, guide=None) -> dict:
    """What rebuilds ``model``'s parts on load: its class, every channel's and the propensity's
    class and settings, the guide's (see :mod:`pyro_irm.models.components`).

    Raises:
        ValueError: a part whose settings cannot be read back (checked before a fit, too).
    """
    channels = list(getattr(model, "channels", ()))
    propensity = getattr(model, "propensity", None)
    return {
        "model_class": findable_path(model),
        "model_settings": constructor_settings(model, skip=_MODEL_ARGUMENTS, own=False),
        "channel_types": [findable_path(c) for c in channels],
        "channel_settings": [c.settings() if hasattr(c, "settings") else {} for c in channels],
        "propensity": None if propensity is None else describe(propensity),
        "guide": None if guide is None else describe(guide, skip=("model",)),
    }


def _saved_model(meta: dict, config: ModelConfig, where: Path) -> FeedbackModel:
    """A fresh model of the saved class with its saved parts (weights not yet loaded)."""
    from pyro_irm.models.implicit import ImplicitFeedbackModel
    from pyro_irm.models.observed import ObservedPreferenceModel

    if "model_class" in meta:
        model_class = load_class(meta["model_class"], base=FeedbackModel, where=where)
    else:  # saved before class paths: the method says which
        model_class = ImplicitFeedbackModel if meta["method"] == "implicitrm" else ObservedPreferenceModel
    settings = meta.get("model_settings") or {}
    specs = tuple(ChannelSpec(**c) for c in meta["channels"])
    if not model_class.observes_channels:
        return model_class(meta["embedding_dim"], meta["context_dim"], config, **settings)
    channels = _channel_components(
        specs, meta.get("channel_types"), meta.get("channel_settings"), config, meta, where
    )
    propensity = meta.get("propensity")
    propensity = rebuild(propensity, base=torch.nn.Module, where=where) if propensity else None
    dims = (meta["embedding_dim"], meta["context_dim"])
    return model_class(*dims, config, channels, meta["num_users"], propensity=propensity, **settings)


def _channel_components(specs, types, settings, config: ModelConfig, meta: dict, where: Path) -> list:
    """The saved model's channel components, rebuilt by their class paths (or, in older saves,
    registered names) with their own settings."""
    from pyro_irm.models.channel import CHANNEL_TYPES, Channel
    from pyro_irm.models.implicit import channel_feature_dim

    if not types:
        return list(specs)
    settings = settings or [{} for _ in types]
    feature_dim = channel_feature_dim(config, meta["embedding_dim"], meta["context_dim"])
    built = []
    for spec, name, own in zip(specs, types, settings, strict=True):
        try:
            channel_class = load_class(name, CHANNEL_TYPES, base=Channel)
        except ValueError as error:
            raise ValueError(f"{where}: channel {spec.name!r}: {error}") from None
        built.append(channel_class.build(spec, config, feature_dim, **own))
    return built


def _extras(users: torch.Tensor | None, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    extras = {"users": users, "labels": labels}
    return {k: v for k, v in extras.items() if v is not None}


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
