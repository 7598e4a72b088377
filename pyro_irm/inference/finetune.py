"""End-to-end fine-tuning: the text encoder trained together with ImplicitRM's heads.

The encoder's pooled embedding of each row feeds the four-group model and the amortized
stratification guide, so a row's group posterior comes from its text and the ELBO's gradient
reaches the encoder: all its weights (``mode='full'``) or low-rank adapters on its attention
(``mode='lora'``, with peft). ``mode='frozen'`` runs the same loop with the encoder fixed, the
baseline a fine-tune has to beat. Gradients of ``accumulation_steps`` minibatches add up before
each step; ``gradient_checkpointing`` trades compute for activation memory. Early stopping and
the kept epoch use the exact held-out ELBO, as :func:`pyro_irm.fit` does.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from pyro_irm.data.feedback import split_indices
from pyro_irm.data.logs import FeedbackLog
from pyro_irm.encoders.config import EncoderConfig
from pyro_irm.encoders.encoder import TextEncoder
from pyro_irm.estimators import build_model, get_estimator
from pyro_irm.inference.config import FinetuneConfig, TrainConfig
from pyro_irm.inference.loop import run_epochs
from pyro_irm.inference.objectives import build_guide, heldout_elbo, parameter_groups, training_rows
from pyro_irm.inference.result import FitResult
from pyro_irm.inference.svi import check_learnable, check_user_model
from pyro_irm.models.base import FeedbackModel, Rows
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.guides import store_globals
from pyro_irm.models.implicit import ImplicitFeedbackModel
from pyro_irm.models.reward_model import RewardModel

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult(FitResult):
    """A :class:`FitResult` whose reward model reads the embeddings of ``encoder``, the trained
    encoder (adapters merged into its weights)."""

    encoder: TextEncoder | None = None

    def save_encoder(self, directory: str | Path) -> Path:
        """Write the trained encoder and its tokenizer as a Hugging Face model directory."""
        directory = Path(directory)
        self.encoder.model.save_pretrained(directory, safe_serialization=True)
        self.encoder.tokenizer.save_pretrained(directory)
        return directory


def _trainable_encoder(encoder: TextEncoder, config: FinetuneConfig) -> list[torch.nn.Parameter]:
    """Make ``encoder``'s model trainable as ``config`` says; returns the parameters to train."""
    model = encoder.model
    if config.mode == "frozen":
        model.requires_grad_(False)
        return []
    if config.gradient_checkpointing:  # transformers 5 renamed it
        enable = (
            getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        )
        enable()
    if config.mode == "full":
        model.requires_grad_(True)
        return [p for p in model.parameters() if p.requires_grad]
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules) or None,
    )
    if config.gradient_checkpointing:  # the frozen input embeddings must pass a gradient through
        model.enable_input_require_grads()
    with warnings.catch_warnings():  # peft reads an attribute transformers has renamed
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        encoder.model = get_peft_model(model, lora)
    return [p for p in encoder.model.parameters() if p.requires_grad]


def _embed(encoder: TextEncoder, log: FeedbackLog, rows: np.ndarray) -> torch.Tensor:
    prompts = log.encoder_prompts
    return encoder.embed([prompts[i] for i in rows], [log.responses[i] for i in rows])


@torch.no_grad()
def _embed_all(encoder: TextEncoder, log: FeedbackLog, rows: np.ndarray, batch_size: int) -> torch.Tensor:
    encoder.model.eval()
    parts = [_embed(encoder, log, rows[i : i + batch_size]).float() for i in range(0, len(rows), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, encoder.dim)


def finetune(
    log: FeedbackLog,
    encoder_config: EncoderConfig | None = None,
    train_config: TrainConfig | None = None,
    model_config: ModelConfig | None = None,
    config: FinetuneConfig | None = None,
    model: FeedbackModel | None = None,
) -> FinetuneResult:
    """Fit ImplicitRM on ``log``'s texts and actions with its encoder trained too.

    ``train_config`` gives the heads' learning rate, batch size, epochs, early stopping and seed
    (its ``method`` must be a latent-group one such as 'implicitrm'; the guide is the amortized one,
    its groups summed exactly); ``config`` what of the encoder is trained. ``model``: a
    latent-group model of the user's (channels, engagement of their own), built for the encoder's
    width, to train instead of the one the method builds. Returns the fit with the trained encoder.
    """
    encoder_config = encoder_config or EncoderConfig()
    train_config = train_config or TrainConfig()
    model_config = model_config or ModelConfig()
    config = config or FinetuneConfig()
    estimator = get_estimator(train_config.method)
    if not estimator.latent_groups:
        raise ValueError(
            f"finetune trains the encoder through a latent-group model and its guide; method "
            f"{train_config.method!r} is not one (use 'implicitrm' or a variant of it)"
        )
    if train_config.checkpoint_dir is not None or train_config.devices > 1:
        raise ValueError("finetune runs in one process without checkpoints: drop checkpoint_dir and devices")
    if train_config.validation_fraction <= 0:
        raise ValueError("finetune selects its epoch by the held-out ELBO: validation_fraction must be > 0")
    if train_config.restarts > 1:
        raise ValueError("finetune trains one initialization: give restarts=1")
    torch.manual_seed(train_config.seed)
    encoder = TextEncoder(encoder_config)
    encoder_parameters = _trainable_encoder(encoder, config)
    data = log.to_feedback(np.zeros((len(log), encoder.dim), dtype=np.float32))  # actions, context, users
    if model is None:
        model = build_model(
            train_config.method, encoder.dim, data.context_dim, model_config, data.channels, data.num_users,
            context_names=data.context_names,
        )  # fmt: skip
    else:
        check_user_model(model, data, train_config.method)
    # The rows' groups amortized (summed exactly), the globals by config.global_guide.
    guide = build_guide(replace(train_config, inference="amortized", guide_gradient="enumerate"), model)
    model.to(encoder.device)
    guide.to(encoder.device)
    split = split_indices(len(log), train_config.validation_fraction, train_config.seed)
    check_learnable(data, train_config.method, data.action_matrix, train_rows=split[0])
    if isinstance(model, ImplicitFeedbackModel):
        model.initialize_channels(data.action_matrix[split[0]].to(encoder.device))
    trainer = _FinetuneTrainer(
        encoder, log, model, guide, training_rows(train_config, data, data.action_matrix), split,
        encoder_parameters, train_config, config, encoder_config.batch_size,
    )  # fmt: skip
    state = run_epochs(trainer, train_config, description="fine-tune")
    model.load_state_dict(state.best_state["model"])
    guide.load_state_dict(state.best_state["guide"])
    spread = store_globals(model, guide.globals_guide)
    with torch.no_grad():
        named = dict(encoder.model.named_parameters())
        for name, value in state.best_state["encoder"].items():
            named[name].copy_(value)
    if config.mode == "lora":
        encoder.model = encoder.model.merge_and_unload()
    encoder.model.eval()
    encoder.model.requires_grad_(False)
    return FinetuneResult(
        reward_model=RewardModel(model, train_config.method, guide.rows_guide, spread),
        history=state.history,
        config=replace(train_config, inference="amortized"),
        train_indices=split[0],
        validation_indices=split[1],
        device=str(encoder.device),
        encoder=encoder,
    )


class _FinetuneTrainer:
    """Minibatch steps through the encoder and the heads (:class:`~pyro_irm.inference.loop.Trainer`):
    each row's embedding is computed from its text at every step, and gradients of
    ``accumulation_steps`` minibatches add up before each optimizer step."""

    def __init__(
        self, encoder, log, model, guide, rows: Rows, split, encoder_parameters, train_config, config,
        embed_batch_size,
    ):  # fmt: skip
        self.encoder, self.log, self.model, self.guide, self.rows = encoder, log, model, guide, rows
        self.train_index, self.validation_index = split
        self.encoder_parameters, self.train_config, self.config = encoder_parameters, train_config, config
        self.embed_batch_size = embed_batch_size
        groups = parameter_groups([*model.parameters(), *guide.parameters()], guide, train_config)
        if encoder_parameters:
            groups.append({"params": encoder_parameters, "lr": config.encoder_learning_rate})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=train_config.weight_decay)
        self.elbo = TraceEnum_ELBO(max_plate_nesting=1)
        self.generator = torch.Generator().manual_seed(train_config.seed)

    def _loss(self, index: torch.Tensor) -> torch.Tensor:
        num_rows = len(self.train_index)
        device = self.encoder.device
        embeddings = _embed(self.encoder, self.log, index.numpy()).float()
        batch = self.rows.take(index, device).with_embeddings(embeddings)
        scale = 1.0 / num_rows  # per training row, as SVIObjective
        return self.elbo.differentiable_loss(
            poutine.scale(self.model, scale),
            poutine.scale(self.guide, scale),
            batch.embeddings,
            batch.actions,
            batch.context,
            torch.arange(len(index), device=device),
            num_rows=num_rows,
            observed=batch.observed,
            **batch.extras,
        )

    def train_epoch(self, epoch: int) -> float:
        accumulation = self.config.accumulation_steps
        self.encoder.model.train(self.config.mode != "frozen")
        self.model.train()
        self.guide.train()
        order = self.train_index[torch.randperm(len(self.train_index), generator=self.generator)]
        total, steps = 0.0, 0
        self.optimizer.zero_grad()
        for step, index in enumerate(order.split(self.train_config.batch_size)):
            loss = self._loss(index)
            (loss / accumulation).backward()
            total += loss.item() * len(index)
            if (step + 1) % accumulation == 0:
                self.optimizer.step()
                self.optimizer.zero_grad()
            steps = step + 1
        if steps % accumulation:
            self.optimizer.step()
            self.optimizer.zero_grad()
        return total / len(self.train_index)

    def validation_score(self) -> float:
        self.model.eval()
        self.guide.eval()
        index = self.validation_index
        embeddings = _embed_all(self.encoder, self.log, index.numpy(), self.embed_batch_size)
        held_out = self.rows.take(index, self.encoder.device).with_embeddings(embeddings)
        return heldout_elbo(
            self.model, self.guide, held_out, torch.arange(len(index)), num_rows=len(self.train_index)
        )

    def snapshot(self) -> dict:
        trained = {id(p) for p in self.encoder_parameters}
        encoder_state = {
            k: v.detach().clone() for k, v in self.encoder.model.named_parameters() if id(v) in trained
        }
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "guide": copy.deepcopy(self.guide.state_dict()),
            "encoder": encoder_state,
        }
