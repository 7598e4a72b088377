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
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from tqdm.auto import tqdm

from pyro_irm.data.feedback import split_indices
from pyro_irm.data.logs import FeedbackLog
from pyro_irm.encoders.config import EncoderConfig
from pyro_irm.encoders.encoder import TextEncoder
from pyro_irm.estimators import get_estimator
from pyro_irm.inference.config import FinetuneConfig, TrainConfig
from pyro_irm.inference.objectives import heldout_elbo
from pyro_irm.inference.result import FitHistory, FitResult
from pyro_irm.inference.svi import check_learnable
from pyro_irm.models.base import gather_rows
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.guides import StratificationGuide
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
) -> FinetuneResult:
    """Fit ImplicitRM on ``log``'s texts and actions with its encoder trained too.

    ``train_config`` gives the heads' learning rate, batch size, epochs, early stopping and seed
    (its ``method`` must be 'implicitrm'; the guide is the amortized one, its groups summed
    exactly); ``config`` what of the encoder is trained. Returns the fit with the trained encoder.
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
    torch.manual_seed(train_config.seed)
    encoder = TextEncoder(encoder_config)
    device = encoder.device
    encoder_parameters = _trainable_encoder(encoder, config)
    data = log.to_feedback(np.zeros((len(log), encoder.dim), dtype=np.float32))  # actions, context, users
    model = estimator.build_model(encoder.dim, data.context_dim, model_config, data.channels, data.num_users)
    guide = StratificationGuide(model, enumerate_groups=True)
    model.to(device)
    guide.to(device)
    train_index, validation_index = split_indices(
        len(log), train_config.validation_fraction, train_config.seed
    )
    check_learnable(data, train_config.method, data.action_matrix, train_rows=train_index)
    groups = [{"params": [*model.parameters(), *guide.parameters()], "lr": train_config.learning_rate}]
    if encoder_parameters:
        groups.append({"params": encoder_parameters, "lr": config.encoder_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=train_config.weight_decay)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    num_rows = len(train_index)
    extras = {"users": data.users, "labels": data.labels if train_config.fit_labels else None}

    def rows_of(values, rows):
        return gather_rows(values, rows, device)

    def batch_loss(rows: torch.Tensor) -> torch.Tensor:
        embeddings = _embed(encoder, log, rows.numpy()).float()
        scale = 1.0 / num_rows  # per training row, as SVIObjective
        batch = {k: rows_of(v, rows) for k, v in extras.items() if v is not None}
        return elbo.differentiable_loss(
            poutine.scale(model, scale),
            poutine.scale(guide, scale),
            embeddings,
            rows_of(data.actions, rows),
            rows_of(data.context, rows),
            torch.arange(len(rows), device=device),
            num_rows=num_rows,
            observed=rows_of(data.observed, rows),
            **batch,
        )

    def validation_score() -> float:
        embeddings = _embed_all(encoder, log, validation_index.numpy(), encoder_config.batch_size)
        batch = {k: rows_of(v, validation_index) for k, v in extras.items() if v is not None}
        return heldout_elbo(
            model,
            guide,
            embeddings,
            rows_of(data.actions, validation_index),
            rows_of(data.context, validation_index),
            torch.arange(len(validation_index)),
            observed=rows_of(data.observed, validation_index),
            **batch,
        )

    def snapshot() -> dict:
        trained = {id(p) for p in encoder_parameters}
        encoder_state = {
            k: v.detach().clone() for k, v in encoder.model.named_parameters() if id(v) in trained
        }
        return {"model": copy.deepcopy(model.state_dict()), "guide": copy.deepcopy(guide.state_dict()),
                "encoder": encoder_state}  # fmt: skip

    history = FitHistory()
    best_value, best_state, without_gain = -float("inf"), None, 0
    generator = torch.Generator().manual_seed(train_config.seed)
    epochs = tqdm(
        range(train_config.max_epochs), desc="fine-tune", disable=None if train_config.progress else True
    )
    for epoch in epochs:
        started = time.perf_counter()
        encoder.model.train(config.mode != "frozen")
        model.train()
        guide.train()
        order = train_index[torch.randperm(num_rows, generator=generator)]
        total, steps = 0.0, 0
        optimizer.zero_grad()
        for step, rows in enumerate(order.split(train_config.batch_size)):
            loss = batch_loss(rows)
            (loss / config.accumulation_steps).backward()
            total += loss.item() * len(rows)
            if (step + 1) % config.accumulation_steps == 0:
                optimizer.step()
                optimizer.zero_grad()
            steps = step + 1
        if steps % config.accumulation_steps:
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        guide.eval()
        value = validation_score()
        history.train_loss.append(total / num_rows)
        history.validation_score.append(value)
        history.epoch_seconds.append(time.perf_counter() - started)
        logger.info("fine-tune epoch %d: train %.4f, held-out ELBO %.4f", epoch + 1, total / num_rows, value)
        if value > best_value + train_config.min_delta:
            best_value, best_state, without_gain = value, snapshot(), 0
            history.best_epoch = epoch
        else:
            without_gain += 1
            if without_gain >= train_config.patience:
                history.stopped_early = True
                break
    epochs.close()
    model.load_state_dict(best_state["model"])
    guide.load_state_dict(best_state["guide"])
    with torch.no_grad():
        named = dict(encoder.model.named_parameters())
        for name, value in best_state["encoder"].items():
            named[name].copy_(value)
    if config.mode == "lora":
        encoder.model = encoder.model.merge_and_unload()
    encoder.model.eval()
    encoder.model.requires_grad_(False)
    return FinetuneResult(
        reward_model=RewardModel(model, train_config.method, guide),
        history=history,
        config=replace(train_config, inference="amortized"),
        train_indices=train_index,
        validation_indices=validation_index,
        device=str(device),
        encoder=encoder,
    )
