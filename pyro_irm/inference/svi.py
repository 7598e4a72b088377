"""Fitting: minibatch SVI (or, for the loss family, risk minimization) over rows, early stopping on
held-out data, checkpoints. One loop for every estimator in :data:`pyro_irm.estimators.ESTIMATORS`."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import pyro
import torch

from pyro_irm.channels import describe_channels
from pyro_irm.data.feedback import FeedbackData, split_indices
from pyro_irm.device import die_with_parent, resolve_device
from pyro_irm.estimators import build_model, check_setting, get_estimator
from pyro_irm.estimators.nuisance import EstimatorConfig, Nuisance, estimate_nuisance
from pyro_irm.inference.checkpoint import checkpoint_path, identity, load_checkpoint, save_checkpoint
from pyro_irm.inference.config import TrainConfig
from pyro_irm.inference.identification import check_identification, warn_if_not_decided
from pyro_irm.inference.loop import LoopState, StopTraining, run_epochs
from pyro_irm.inference.objectives import (
    build_guide,
    build_objective,
    parameter_groups,
    rows_guide,
    training_rows,
)
from pyro_irm.inference.remedies import (
    EngagementPrior,
    Penalties,
    RewardContextPenalty,
    context_erasure,
    erase_context,
    exposure_prior,
    fold_erasure,
)
from pyro_irm.inference.result import FitHistory, FitResult
from pyro_irm.models.base import FeedbackModel
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.guides import ModelGuide, StratificationGuide, store_globals
from pyro_irm.models.identifiability import check_engagement_reads, engagement_reads, warn_if_unidentified
from pyro_irm.models.implicit import ImplicitFeedbackModel
from pyro_irm.models.reward_model import RewardModel, saved_components

logger = logging.getLogger(__name__)


def fit(
    data: FeedbackData,
    config: TrainConfig | None = None,
    model_config: ModelConfig | None = None,
    estimator_config: EstimatorConfig | None = None,
    nuisance: Nuisance | None = None,
    model: FeedbackModel | None = None,
    guide: torch.nn.Module | Callable[[FeedbackModel], torch.nn.Module] | None = None,
) -> FitResult:
    """Fit a reward model to implicit (or observational) feedback.

    Args:
        data: embeddings ``(N, D)``, actions ``(N,)``, optional context ``(N, C)`` and, for an
            observational log, the observation indicator ``observed`` ``(N,)``.
        config: method, inference, optimization, early stopping, device, checkpoints.
        model_config: networks and generative assumptions.
        estimator_config: propensity, class prior and flip-rate choices of the baselines.
        nuisance: precomputed nuisance quantities (for example shared by several methods on one
            data set); what the method needs and ``nuisance`` lacks is estimated from ``data``.
        model: a model built by the user (for example an
            :class:`~pyro_irm.models.ImplicitFeedbackModel` with channel components of their own)
            to fit instead of the one ``config.method`` builds; it is trained in place.
        guide: the guide of the model's global latents (user effects, their scale, flip rates):
            a module whose call samples every global site and whose ``median()`` gives
            ``{site: value}`` (a Pyro autoguide of ``model.model_globals``), or a function of the
            model that builds one; default :class:`~pyro_irm.models.guides.GlobalGuide` of
            ``config.global_guide``.

    Returns:
        :class:`FitResult` holding the :class:`RewardModel` from the epoch with the best held-out
        score (the exact ELBO for the Pyro family, minus the method's own risk for the loss
        family; the last epoch without a validation set) and the per-epoch history. With
        ``config.restarts`` above 1, the restart (initialization and minibatch order; the split
        is shared) with the best held-out score.
    """
    config = config or TrainConfig()
    if model is not None and config.restarts > 1:
        raise ValueError(
            f"restarts={config.restarts}: restarts draw new initializations of the model the method "
            "builds, and a model handed to fit is one initialization; give restarts=1, or build "
            "several models and keep the best fit"
        )
    fabric = _launch(config) if config.devices > 1 else None
    if config.restarts == 1 or model is not None:
        return _fit_once(
            data, config, model_config, estimator_config, nuisance, model, fabric=fabric, guide=guide
        )
    if config.checkpoint_dir is not None:
        raise ValueError("restarts: a checkpointed fit resumes one run; give restarts=1 with checkpoint_dir")
    best: FitResult | None = None
    for restart in range(config.restarts):
        result = _fit_once(
            data, config, model_config, estimator_config, nuisance, None, restart, fabric, guide=guide
        )
        logger.info("restart %d: held-out score %.5f", restart, result.best_validation_score)
        if best is None or result.best_validation_score > best.best_validation_score:
            best = result
    return best


def fit_selected(
    data: FeedbackData,
    config: TrainConfig,
    model_configs: Sequence[ModelConfig | FeedbackModel],
    estimator_config: EstimatorConfig | None = None,
    nuisance: Nuisance | None = None,
) -> tuple[FitResult, ModelConfig | FeedbackModel]:
    """Fit each candidate and keep the one with the best held-out score: the held-out ELBO for the
    Pyro family, minus the held-out risk for the loss family, on the same held-out rows (the split
    depends on ``config.seed`` alone), so the scores compare. Clean labels play no part.

    A candidate is a :class:`ModelConfig` (for example reward networks of several widths; the
    method builds the model) or a model of the user's (trained in place, as :func:`fit` does).
    Returns the kept fit and its candidate."""
    if not model_configs:
        raise ValueError("model_configs: give at least one configuration to choose from")
    if config.validation_fraction <= 0 and len(model_configs) > 1:
        raise ValueError("choosing among configurations needs held-out rows (validation_fraction > 0)")
    best: tuple[FitResult, ModelConfig | FeedbackModel] | None = None
    for candidate in model_configs:
        if isinstance(candidate, FeedbackModel):
            result = fit(data, config, estimator_config=estimator_config, nuisance=nuisance, model=candidate)
            label = type(candidate).__name__
        else:
            result = fit(data, config, candidate, estimator_config, nuisance)
            label = candidate.reward_hidden
        logger.info("%s: held-out score %.5f", label, result.best_validation_score)
        if best is None or result.best_validation_score > best[0].best_validation_score:
            best = (result, candidate)
    return best


@dataclass
class _Plan:
    """What a fit settled before building anything: its data (on its device), the method's
    actions, the model configuration with its flip rates, nuisance, seed and split."""

    data: FeedbackData
    actions: torch.Tensor
    model_config: ModelConfig
    nuisance: Nuisance
    device: torch.device
    run_seed: int
    train_index: torch.Tensor
    validation_index: torch.Tensor


def _fit_once(
    data: FeedbackData,
    config: TrainConfig,
    model_config: ModelConfig | None,
    estimator_config: EstimatorConfig | None,
    nuisance: Nuisance | None,
    model: FeedbackModel | None,
    restart: int = 0,
    fabric=None,
    guide=None,
) -> FitResult:
    """One fit (see :func:`fit`); ``restart`` k > 0 draws another initialization and batch order;
    with ``fabric`` (several processes) each process takes its share of every minibatch; ``guide``
    the global latents' guide (or its builder). Three steps: plan, train, finish."""
    estimator_config = estimator_config or EstimatorConfig()
    plan = _plan(
        data, config, model_config or ModelConfig(), estimator_config, nuisance, model, restart, fabric
    )
    model, guide, state, erased = _train(plan, config, estimator_config, model, guide, fabric)
    return _finish(plan, config, model, guide, state, erased, fabric)


def _plan(data, config, model_config, estimator_config, nuisance, model, restart, fabric) -> _Plan:
    """Check the fit, move the data, complete the nuisance, seed, and split the rows."""
    actions = _check_fit(data, config, model_config, model)
    device = fabric.device if fabric is not None else resolve_device(config.device)
    if device.type == "cuda":
        data = data.to(device)  # once, not a host-to-device copy per step
    nuisance = complete_nuisance(data, config.method, estimator_config, nuisance, config.seed)
    if get_estimator(config.method).latent_groups:
        model_config = _with_flip_rates(model_config, nuisance)
    pyro.clear_param_store()
    run_seed = config.seed + 7919 * restart
    pyro.set_rng_seed(run_seed)
    train_index, validation_index = _split(data, config)
    if len(validation_index):
        check_learnable(data, config.method, actions, train_rows=train_index)
    return _Plan(data, actions, model_config, nuisance, device, run_seed, train_index, validation_index)


def _remedy_penalties(plan: _Plan, config: TrainConfig, model, actions, device):
    """The training-only penalties the model config asks for (an engagement prior, the reward
    decorrelated from the context), summed; None without any."""
    data, model_config = plan.data, plan.model_config
    if not get_estimator(config.method).latent_groups:
        return None
    penalties = []
    if model_config.engagement_prior_weight > 0:
        exposure = exposure_prior(data, actions, plan.train_index, model_config.engagement_prior_power)
        penalties.append(
            EngagementPrior(model, exposure.to(device), model_config.engagement_prior_weight, data)
        )
    if model_config.reward_context_penalty > 0:
        penalties.append(RewardContextPenalty(model, model_config.reward_context_penalty, data))
    return Penalties(*penalties) if penalties else None


def _train(plan: _Plan, config: TrainConfig, estimator_config, model, guide, fabric):
    """Build the model, guide, objective and optimizer, and run the epochs (resuming a
    checkpoint). Returns ``(model, guide, loop state, erasure to fold or None)``."""
    data, actions, device, train_index = plan.data, plan.actions, plan.device, plan.train_index
    # Parameters stay on the modules, not in Pyro's global store; PyroModules read this setting
    # when they are built, so they are built inside it.
    with pyro.settings.context(module_local_params=True):
        model, plan.model_config = _the_model(model, data, config, plan.model_config, actions[train_index])
        model = model.to(device)
        erased = _erase_context(model, plan.model_config, data, train_index)
        guide = build_guide(config, model, guide).to(device)
        objective = build_objective(
            config, model, guide, data, actions, plan.nuisance, estimator_config, train_index
        )
        objective.penalty = _remedy_penalties(plan, config, model, actions, device)
        groups = parameter_groups(objective.parameters(), guide, config)
        optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
        checkpoint = None
        if config.checkpoint_dir is not None:
            checkpoint = _Checkpoint(config, data, plan.model_config, model, guide, optimizer, fabric)
        state = checkpoint.resume() if checkpoint is not None else None
        trainer = _StepTrainer(
            model, guide, objective, optimizer, data, (train_index, plan.validation_index), config, device,
            fabric, plan.run_seed, start_epoch=state.next_epoch if state is not None else 0,
        )  # fmt: skip
        state = run_epochs(
            trainer,
            config,
            state,
            description=f"fit {config.method}",
            show_progress=_is_main(fabric),
            after_epoch=checkpoint.save if checkpoint is not None else None,
        )
    return model, guide, state, erased


def _finish(plan: _Plan, config: TrainConfig, model, guide, state, erased, fabric) -> FitResult:
    """Keep the best epoch, store the globals' point estimates, fold an erasure, check the
    identification, and wrap the result."""
    data, actions = plan.data, plan.actions
    train_index, validation_index = plan.train_index, plan.validation_index
    estimator = get_estimator(config.method)
    if len(validation_index) and estimator.family == "pyro" and not config.fit_labels:
        _warn_if_worse_than_constant(state.best_value, actions, data, train_index, validation_index, config)
    if state.best_state is not None:
        model.load_state_dict(state.best_state["model"])
        guide.load_state_dict(state.best_state["guide"])
    spread = store_globals(model, guide.globals_guide if isinstance(guide, ModelGuide) else None)
    if erased is not None:
        fold_erasure(erased)  # the saved reward is a plain network
    check = None
    if estimator.latent_groups and config.check_identification and data.setting == "implicit":
        model.eval()
        guide.eval()
        check = check_identification(
            model, guide, data, training_rows(config, data, actions), train_index, validation_index,
            _other_evidence(data, config), seed=config.seed,
            assumed=_assumed(plan.model_config, getattr(model, "propensity", None)),
        )  # fmt: skip
        warn_if_not_decided(check)
    local = rows_guide(guide)
    return FitResult(
        reward_model=RewardModel(
            model, config.method, local if isinstance(local, StratificationGuide) else None, spread
        ),
        history=state.history,
        config=config,
        train_indices=train_index,
        validation_indices=validation_index,
        device=str(plan.device),
        nuisance_sources=dict(plan.nuisance.sources),
        is_main_process=_is_main(fabric),
        identification=check,
    )


def _check_fit(
    data: FeedbackData, config: TrainConfig, model_config: ModelConfig, model: FeedbackModel | None = None
) -> torch.Tensor:
    """Refuse what this fit cannot do before anything is built; returns the method's observed
    actions ``(N,)`` or ``(N, K)``. Warns where the latent groups are not identified."""
    if not isinstance(data, FeedbackData):
        raise TypeError(f"data must be FeedbackData, got {type(data).__name__}")
    check_setting(config.method, data.setting)
    estimator = get_estimator(config.method)
    actions = estimator.observed_actions(data)
    check_learnable(data, config.method, actions)
    check_scale(data)
    if config.precision == "float16" and (resolve_device(config.device).type != "cuda" or config.devices > 1):
        raise ValueError(
            "precision='float16' needs one CUDA device; on CPU or several processes use 'bfloat16'"
        )
    if config.fit_labels:
        if not estimator.latent_groups:
            raise ValueError(
                f"fit_labels: only method='implicitrm' (or another latent-group model) fits explicit "
                f"labels, not {config.method!r}"
            )
        if data.labels is None or not torch.isfinite(data.labels).any():
            raise ValueError("fit_labels: the data has no explicit labels (FeedbackData.labels, --label-col)")
    if model_config.reward_context_penalty > 0 and data.context is None:
        raise ValueError(
            "reward_context_penalty: the penalty decorrelates the reward from context columns; "
            "name them with --context-col"
        )
    engagement = model.propensity if isinstance(model, ImplicitFeedbackModel) else None
    if engagement is not None:
        check_engagement_reads(engagement, model_config, data.context_columns)
    if estimator.latent_groups and data.setting == "implicit":  # a logged o identifies by itself
        warn_if_unidentified(
            model_config,
            data.context_dim,
            channels=list(model.channels) if isinstance(model, ImplicitFeedbackModel) else data.channels,
            num_users=data.num_users,
            labelled_rows=_count_labels(data) if config.fit_labels else 0,
            engagement=engagement,
        )
    elif not estimator.latent_groups and data.num_channels > 1:
        logger.info("method %s sees one action: any positive channel (%s)", config.method, data.channels)
    return actions


def _erase_context(model, model_config: ModelConfig, data: FeedbackData, train_index: torch.Tensor):
    """With ``erase_context_from_reward``, make f read the embedding without its context directions;
    returns the layer to fold after the fit (None without the option)."""
    if not model_config.erase_context_from_reward:
        return None
    if data.context is None:
        raise ValueError(
            "erase_context_from_reward: the data has no context columns to erase (--context-col)"
        )
    return erase_context(model.reward_net, context_erasure(data, train_index).to(model.device))


def _other_evidence(data: FeedbackData, config: TrainConfig) -> tuple[str, ...]:
    """What besides the context separates preference from engagement in this fit."""
    evidence = []
    if data.num_channels > 1:
        evidence.append(f"{data.num_channels} action channels")
    if data.num_users > 1:
        evidence.append(f"{data.num_users} users' engagement effects")
    if config.fit_labels:
        evidence.append(f"{_count_labels(data)} labelled rows")
    return tuple(evidence)


def _assumed(model_config: ModelConfig, engagement=None) -> tuple[str, ...]:
    """The remedies in force: assumptions that decide the split where the data may not
    (``engagement``: the engagement component, whose declared ``reads`` count)."""
    assumed = []
    if "embedding" not in engagement_reads(model_config, engagement):
        assumed.append("engagement on the context alone")
    if model_config.erase_context_from_reward:
        assumed.append("the context erased from the reward's input")
    if model_config.engagement_prior_weight > 0:
        assumed.append(f"an engagement prior (weight {model_config.engagement_prior_weight:g})")
    if model_config.reward_context_penalty > 0:
        assumed.append(
            f"the reward decorrelated from the context (weight {model_config.reward_context_penalty:g})"
        )
    return tuple(assumed)


def _split(data: FeedbackData, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out row indices (the held-out rows choose the epoch)."""
    if config.validation_fraction > 0 and len(data) >= 2:
        return split_indices(len(data), config.validation_fraction, config.seed)
    return torch.arange(len(data)), torch.arange(0)


def _the_model(
    model: FeedbackModel | None,
    data: FeedbackData,
    config: TrainConfig,
    model_config: ModelConfig,
    train_actions: torch.Tensor,
) -> tuple[FeedbackModel, ModelConfig]:
    """The model to train, with the configuration it was built from: the user's (checked), or
    the one ``config.method`` builds. Either way its channels start from the training rows'
    actions (each channel's ``initialize``)."""
    if model is not None:
        check_user_model(model, data, config.method)
        _adopt_local_params(model)
        model_config = model.config
    else:
        groups = get_estimator(config.method).latent_groups
        model = build_model(
            config.method,
            data.embedding_dim,
            data.context_dim,
            model_config,
            channels=data.channels if groups else None,
            num_users=data.num_users if groups else 0,
            context_names=data.context_names,
        )
    if isinstance(model, ImplicitFeedbackModel):
        model.initialize_channels(train_actions)
    return model, model_config


class _StepTrainer:
    """One objective's minibatch steps (:class:`~pyro_irm.inference.loop.Trainer`): in float32
    through ``loss_and_grads``, in low precision under autocast, or each process its share."""

    def __init__(
        self, model, guide, objective, optimizer, data, split, config, device, fabric, run_seed,
        start_epoch=0,
    ):  # fmt: skip
        self.model, self.guide, self.data = model, guide, data
        self.objective, self.optimizer = objective, optimizer
        self.train_index, self.validation_index = split
        self.config, self.device, self.fabric, self.run_seed = config, device, fabric, run_seed
        self.start_epoch, self.first_loss = start_epoch, None
        self.step_objective, self.step_optimizer = objective, optimizer
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "float16" else None
        if fabric is not None:  # the wrapped objective averages the processes' gradients
            self.step_objective, self.step_optimizer = fabric.setup(objective, optimizer)

    def train_epoch(self, epoch: int) -> float:
        config, num_train = self.config, len(self.train_index)
        self.model.train()
        self.guide.train()
        # The permutation depends on (seed, epoch) alone, so a resumed fit sees the same batches.
        generator = torch.Generator().manual_seed(self.run_seed * 1_000_003 + epoch)
        order = self.train_index[torch.randperm(num_train, generator=generator)]
        total, seen = 0.0, 0
        for step, batch in enumerate(order.split(config.batch_size)):
            self.step_optimizer.zero_grad(set_to_none=True)
            loss = self._loss_and_grads(batch, num_train)
            if loss is None:  # a last minibatch smaller than the processes: dropped by all
                continue
            self.first_loss = loss if self.first_loss is None else self.first_loss
            if _diverged(loss, self.first_loss):
                error = FitDivergedError(
                    _divergence_message(loss, self.first_loss, epoch, step, config, self.start_epoch)
                )
                if (
                    get_estimator(config.method).risk_unbounded_below
                    and loss < 0
                    and len(self.validation_index)
                ):
                    raise StopTraining(_overfit_reason(loss, config), error)  # the best epoch stands
                raise error
            if self.scaler is None:
                self.step_optimizer.step()
            else:
                self.scaler.step(self.step_optimizer)
                self.scaler.update()
            total, seen = total + loss * len(batch), seen + len(batch)
            if step % _RELEASE_EVERY_STEPS == _RELEASE_EVERY_STEPS - 1:
                self.data.release_pages()
        return total / max(seen, 1)

    def _loss_and_grads(self, batch: torch.Tensor, num_train: int) -> float | None:
        if self.fabric is None and self.config.precision == "float32":
            return self.objective.loss_and_grads(batch, num_rows=num_train)
        if self.fabric is not None:
            batch = _share(batch, self.fabric)
            if batch is None:
                return None
        with _autocast(self.config.precision, self.device):
            differentiable, reported = self.step_objective(batch, num_train)
        if self.fabric is not None:
            self.fabric.backward(differentiable)
        else:
            (differentiable if self.scaler is None else self.scaler.scale(differentiable)).backward()
        return reported.item()

    def validation_score(self) -> float | None:
        if not len(self.validation_index):
            return None
        self.model.eval()
        self.guide.eval()
        value = self.objective.validation_score(self.validation_index)
        self.data.release_pages()
        return value

    def snapshot(self) -> dict[str, dict[str, torch.Tensor]]:
        return _copy_state(self.model, self.guide)


class _Checkpoint:
    """A fit's per-epoch checkpoint: what must match to resume it, and its writing."""

    def __init__(self, config, data, model_config, model, guide, optimizer, fabric):
        self.config, self.model, self.guide, self.optimizer, self.fabric = (
            config, model, guide, optimizer, fabric
        )  # fmt: skip
        self.shapes = {
            "rows": len(data),
            "embedding_dim": data.embedding_dim,
            "context_dim": data.context_dim,
            "channels": describe_channels(data.channels),
            "num_users": data.num_users,
            "fit_labels": config.fit_labels,
            "data": data.fingerprint(),
            "model_config": json.loads(json.dumps(asdict(model_config))),
            "parameters": {
                name: list(value.shape)
                for prefix, module in (("model", model), ("guide", guide))
                for name, value in _prefixed(prefix, module.state_dict()).items()
            },
        }

    def resume(self) -> LoopState | None:
        """The saved state of this same fit (its weights and RNG restored), or None."""
        state = load_checkpoint(self.config.checkpoint_dir, self.config, self.shapes)
        if state is None:
            return None
        self.model.load_state_dict(state["model"])
        self.guide.load_state_dict(state["guide"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_state"])
        logger.info("resumed from %s after epoch %d", self.config.checkpoint_dir, state["epoch"])
        return LoopState(
            history=FitHistory(**state["history"]),
            best_value=state["best_value"],
            best_state=state["best_state"],
            epochs_without_gain=state["epochs_without_gain"],
            next_epoch=state["epoch"] + 1,
        )

    def save(self, epoch: int, loop: LoopState) -> None:
        state = {
            "identity": identity(self.config, self.shapes),
            "model": self.model.state_dict(),
            "guide": self.guide.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": asdict(loop.history),
            "best_value": loop.best_value,
            "best_state": loop.best_state,
            "epochs_without_gain": loop.epochs_without_gain,
            "epoch": epoch,
            "rng_state": torch.get_rng_state(),
        }
        if self.fabric is None:
            save_checkpoint(self.config.checkpoint_dir, state)
        else:  # Lightning's checkpoint IO: the first process writes, the others wait for it
            self.fabric.save(checkpoint_path(self.config.checkpoint_dir), state)


def _launch(config: TrainConfig):
    """Lightning Fabric over ``config.devices`` processes (gloo on CPU, NCCL on CUDA), launched:
    with 'ddp' the other processes run the same command again, so call this from a script or
    ``pyro-irm fit``, not from an interactive session."""
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    device = resolve_device(config.device)
    accelerator = "cuda" if device.type == "cuda" else "cpu"
    backend = "nccl" if accelerator == "cuda" else "gloo"
    # The amortized guide's score-function baseline gets no gradient when its groups are summed.
    unused = get_estimator(config.method).latent_groups and config.inference == "amortized"
    strategy = DDPStrategy(process_group_backend=backend, find_unused_parameters=unused)
    fabric = Fabric(accelerator=accelerator, devices=config.devices, strategy=strategy)
    fabric.launch()
    if fabric.global_rank != 0:
        die_with_parent()
    return fabric


def _autocast(precision: str, device: torch.device):
    """Low-precision arithmetic for the networks in a step (the models return float32 logits)."""
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


def _is_main(fabric) -> bool:
    return fabric is None or fabric.global_rank == 0


def _share(batch: torch.Tensor, fabric) -> torch.Tensor | None:
    """This process's rows of a minibatch: every ``world_size``-th row from its rank on, so the
    processes together take the minibatch one process would (None when some would get none)."""
    if len(batch) < fabric.world_size:
        return None
    return batch[fabric.global_rank :: fabric.world_size]


def _prefixed(prefix: str, state: dict) -> dict:
    return {f"{prefix}.{name}": value for name, value in state.items()}


def complete_nuisance(
    data: FeedbackData,
    method: str,
    config: EstimatorConfig,
    nuisance: Nuisance | None = None,
    seed: int = 0,
) -> Nuisance:
    """``nuisance`` with whatever ``method`` needs on ``data`` and it lacks estimated."""
    nuisance = nuisance or Nuisance()
    needs = get_estimator(method).needs(data.setting, config)
    present = {
        "propensity": nuisance.propensity is not None,
        "relative_propensity": nuisance.relative_propensity is not None,
        "class_prior": nuisance.class_prior is not None,
        "flip_rates": nuisance.eps1 is not None and nuisance.eps0 is not None,
        "imputation": nuisance.imputation is not None,
    }
    missing = {name for name in needs if not present[name]}
    if not missing:
        return nuisance
    estimated = estimate_nuisance(data, missing, config, seed)
    merged = {
        name: getattr(estimated, name) if getattr(estimated, name) is not None else getattr(nuisance, name)
        for name in ("propensity", "relative_propensity", "class_prior", "eps1", "eps0", "imputation")
    }
    return Nuisance(**merged, sources={**nuisance.sources, **estimated.sources})


def _with_flip_rates(model_config: ModelConfig, nuisance: Nuisance) -> ModelConfig:
    """On an observational log, the channel's noise rates come from the flip rates unless the model
    configuration sets them (``eps1 = eps1``, ``eps0 = eps0``)."""
    if nuisance.eps1 is None or model_config.eps0 or model_config.eps1:
        return model_config
    limit = 0.49  # the channel needs eps < 0.5
    return replace(model_config, eps1=min(nuisance.eps1, limit), eps0=min(nuisance.eps0, limit))


def constant_rate_score(
    actions: torch.Tensor, train_index: torch.Tensor, validation_index: torch.Tensor
) -> float | None:
    """Held-out log-likelihood per row of a model that knows only each binary channel's action rate
    on the training rows (None where a column is not binary): any fit should do better."""
    actions = actions if actions.dim() == 2 else actions[:, None]
    if not bool(((actions == 0) | (actions == 1)).all()):
        return None
    rate = actions[train_index].double().mean(0).clamp(1e-6, 1 - 1e-6)
    held = actions[validation_index].double()
    return float((held * rate.log() + (1 - held) * (-rate).log1p()).sum(-1).mean())


def _warn_if_worse_than_constant(
    best_value: float,
    actions: torch.Tensor,
    data: FeedbackData,
    train_index: torch.Tensor,
    validation_index: torch.Tensor,
    config: TrainConfig,
) -> None:
    if data.observed is not None:
        return
    baseline = constant_rate_score(actions, train_index, validation_index)
    if baseline is not None and best_value < baseline - max(0.1, 0.1 * abs(baseline)):
        logger.warning(
            "the fit's best held-out ELBO, %.4g per row, is worse than %.4g, the score of knowing only "
            "each channel's action rate: it failed to fit (a learning rate too high, now %g, or too few "
            "epochs); do not use it",
            best_value,
            baseline,
            config.learning_rate,
        )


# Memory-mapped embeddings give their pages back this often, so a fit's resident memory stays near
# what these many minibatches touch, not the whole file.
_RELEASE_EVERY_STEPS = 8


class FitDivergedError(ValueError):
    """The training loss became non-finite or grew far past where it started; nothing is saved."""


# A per-row loss this many times its first value (and at least this far above it) has diverged:
# training only lowers the loss, and a learning rate far too high sends it up by orders of magnitude.
_DIVERGENCE_FACTOR = 1e3


def _diverged(loss: float, first_loss: float) -> bool:
    if not math.isfinite(loss):
        return True
    return abs(loss) > _DIVERGENCE_FACTOR * max(abs(first_loss), 1.0)


def _overfit_reason(loss: float, config: TrainConfig) -> str:
    return (
        f"{config.method}: the training risk ran away below zero ({loss:.4g} per row), which its unbiased "
        "risk allows once the network overfits the rows (nnpu's risk, for one, stays non-negative)"
    )


def _divergence_message(
    loss: float, first_loss: float, epoch: int, step: int, config: TrainConfig, start_epoch: int
) -> str:
    saved = "no checkpoint was written (give checkpoint_dir to keep one per epoch)"
    if config.checkpoint_dir is not None:
        last = epoch - 1
        saved = (
            f"the last good checkpoint, after epoch {last + 1}, is in {config.checkpoint_dir}"
            if last >= 0 and last >= start_epoch - 1
            else "no checkpoint was written before it"
        )
    if get_estimator(config.method).risk_unbounded_below and loss < 0:
        return (
            f"{config.method}'s risk ran away below zero at epoch {epoch + 1}, step {step} ({loss:.4g} per "
            f"row), before any held-out epoch could be kept: the network has overfit, which its unbounded "
            f"risk allows. No weights were written; {saved}. Hold out rows to choose the epoch "
            "(validation_fraction), use fewer epochs or a smaller network (or, for upu, method 'nnpu', "
            "whose risk stays non-negative)"
        )
    return (
        f"the fit diverged at epoch {epoch + 1}, step {step}: the loss per row is {loss:.4g} (it "
        f"started at {first_loss:.4g}). No weights were written; {saved}. Lower learning_rate (now "
        f"{config.learning_rate:g}) or check the embeddings and context for extreme values"
    )


def check_scale(data: FeedbackData) -> None:
    """Refuse embeddings or context so large that the networks' first layer overflows float32
    (warn from far smaller values, where optimization is already poorly conditioned)."""
    for name, values in (("embeddings", data.embeddings), ("context", data.context)):
        if values is None:
            continue
        largest = max(float(chunk.abs().max()) for chunk in data.chunks(values))
        if largest > _SCALE_LIMIT:
            raise ValueError(
                f"{name}: values up to {largest:.3g} overflow a network's float32 arithmetic; "
                "standardize them (sentence embeddings are usually of size about 1)"
            )
        if largest > _SCALE_WARNING:
            logger.warning(
                "%s: values up to %.3g; networks train poorly on inputs this large, standardize them",
                name,
                largest,
            )


_SCALE_LIMIT = 1e15
_SCALE_WARNING = 1e4


def check_learnable(
    data: FeedbackData, method: str, actions: torch.Tensor, train_rows: torch.Tensor | None = None
) -> None:
    """Refuse a log from which nothing can be learned: one value in every binary action channel
    (or, for the oracle, in the preference), so the reward would only learn that constant. With
    ``train_rows`` ``(T,)``, the same of the rows the fit trains on (the rest held out)."""
    columns, names = get_estimator(method).learning_signal(data, actions)
    if train_rows is not None:
        columns = columns[train_rows.to(columns.device)]
    present = torch.isfinite(columns)  # a missing cell takes no side
    low = torch.where(present, columns, torch.inf).amin(0) if len(columns) else columns.new_zeros(0)
    high = torch.where(present, columns, -torch.inf).amax(0) if len(columns) else columns.new_zeros(0)
    if len(columns) and bool((high > low).any()):
        return
    values = ", ".join(f"{name} is {low[k].item():g}" for k, name in enumerate(names) if len(columns))
    if train_rows is None:
        raise ValueError(
            f"every one of the {len(data)} rows has the same action ({values} on every row): a reward "
            "cannot be learned from a log without both acted and silent rows. Check the action columns "
            "and thresholds (--action-col, --action-threshold) or the rows read"
        )
    held_out = len(data) - len(train_rows)
    raise ValueError(
        f"the {len(train_rows)} training rows all have the same action ({values or 'no rows'}): the log's "
        f"other values fall only in the {held_out} rows held out to choose the epoch "
        f"(validation_fraction), so the training split has one class. Use a longer log "
        "(a few hundred rows at least), or --validation-fraction 0 to train on every row"
    )


def _count_labels(data: FeedbackData) -> int:
    return 0 if data.labels is None else int(torch.isfinite(data.labels).sum())


def check_user_model(model: FeedbackModel, data: FeedbackData, method: str) -> None:
    """A model handed to :func:`fit` (or :func:`~pyro_irm.finetune`) must match the data's widths
    and channels, be of the kind ``method`` fits, and save."""
    if model.embedding_dim != data.embedding_dim or model.context_dim != data.context_dim:
        raise ValueError(
            f"model: built for embeddings of width {model.embedding_dim} and {model.context_dim} "
            f"context column(s), but the data has {data.embedding_dim} and {data.context_dim}"
        )
    specs = getattr(model, "channel_specs", None)
    if specs is not None and tuple(specs) != tuple(data.channels):
        raise ValueError(
            f"model: its channels {[s.name for s in specs]} are not the data's "
            f"{[c.name for c in data.channels]} (same names, polarity and kind, in column order)"
        )
    if model.observes_channels != get_estimator(method).latent_groups:
        kind = "takes every channel" if model.observes_channels else "takes one combined action"
        raise ValueError(
            f"model: a {type(model).__name__} {kind}, which method {method!r} does not fit; "
            + (
                "use a latent-group method such as 'implicitrm'"
                if model.observes_channels
                else "use a method that reads one action, such as 'naive'"
            )  # fmt: skip
        )
    # Before the fit, not after it: a part that cannot be saved would lose the fit at save time.
    saved_components(model)


def _adopt_local_params(model: torch.nn.Module) -> None:
    r"""Give a model built outside ``module_local_params`` the per-module parameter scope that Pyro
    gives modules built inside it (its parameters are plain torch parameters either way)."""
    for module in model.modules():
        context = getattr(module, "_pyro_context", None)
        if context is not None and not hasattr(context, "param_state"):
            context.param_state = {"params": {}, "constraints": {}}


def _copy_state(model: torch.nn.Module, guide: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "guide": {k: v.detach().clone() for k, v in guide.state_dict().items()},
    }
