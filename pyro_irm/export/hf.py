"""Export a fitted reward model with its encoder as a ``transformers`` sequence classifier.

Two formats. ``stock`` (:mod:`pyro_irm.export.stock`): a linear head over a decoder's last-token
state becomes the backbone's own ``*ForSequenceClassification`` checkpoint, which loads with no
remote code. ``remote-code``: for everything else (a mean-pooled encoder, an MLP head), the
directory holds ``config.json`` (with ``auto_map``), ``model.safetensors`` (encoder and head), the
tokenizer, the two code files the model class needs (``trust_remote_code``: they import torch and
transformers only), ``pyro_irm_export.json`` and a README that says why remote code is needed.
``auto`` writes ``stock`` where it holds.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pyro_irm.atomic import atomic_directory, strict_json
from pyro_irm.encoders.config import EncoderConfig
from pyro_irm.export.layout import EXPORT_FILE, EXPORT_FORMATS, ExportFormat

if TYPE_CHECKING:
    from pyro_irm.models.reward_model import RewardModel


def reward_stats(rewards: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Mean and standard deviation of ``(N,)`` rewards, for normalizing them downstream."""
    values = np.asarray(rewards, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std()), "rows": int(values.size)}


def resolved_encoder_config(config: EncoderConfig) -> tuple[EncoderConfig, bool, str | None]:
    """``(config with its auto settings decided, decoder-only?, model type)`` from the backbone's
    config and tokenizer, without loading its weights."""
    from transformers import AutoConfig, AutoTokenizer

    from pyro_irm.encoders.encoder import is_decoder_only, resolve_model_location

    location, _ = resolve_model_location(config.model)
    backbone = AutoConfig.from_pretrained(location, revision=config.revision)
    decoder_only = is_decoder_only(backbone)
    if config.is_resolved:
        return config, decoder_only, backbone.model_type
    tokenizer = AutoTokenizer.from_pretrained(location, revision=config.revision)
    has_template = isinstance(getattr(tokenizer, "chat_template", None), str)
    positions = getattr(backbone.get_text_config(), "max_position_embeddings", None)
    return config.resolved(decoder_only, has_template, positions), decoder_only, backbone.model_type


def export_hf(
    reward_model: RewardModel,
    encoder_config: EncoderConfig,
    directory: str | Path,
    stats: dict[str, float] | None = None,
    source: str | None = None,
    format: ExportFormat = "auto",
) -> Path:
    """Write ``reward_model`` with the encoder of ``encoder_config`` to ``directory`` (whole or not at
    all) as a model that ``AutoModelForSequenceClassification.from_pretrained`` loads without pyro_irm.

    Args:
        reward_model: the fitted model; its reward network becomes the head.
        encoder_config: the encoder the model's embeddings came from.
        directory: the output directory (an earlier export there is replaced).
        stats: the reward's ``mean`` and ``std`` over the training rows (see :func:`reward_stats`).
        source: where the model came from (a run directory), for the README.
        format: ``stock`` (the backbone's own class, no remote code; refused with the reasons where
            it cannot hold), ``remote-code``, or ``auto``: stock where it holds.

    Raises:
        ValueError: ``format='stock'`` where it cannot hold, or a ``text_mode='separate'`` encoder
            (two passes per row; not one sequence).
    """
    from pyro_irm.export.stock import export_stock, stock_export_problems

    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    if encoder_config.text_mode == "separate":
        raise ValueError(
            "export: text_mode='separate' encodes prompt and response in two passes, which one "
            "sequence classifier cannot; fit with text_mode 'pair', 'chat' or 'response' to export"
        )
    stats = stats or {"mean": 0.0, "std": 1.0, "rows": 0}
    encoder_config, decoder_only, model_type = resolved_encoder_config(encoder_config)
    problems = stock_export_problems(reward_model, encoder_config, decoder_only, model_type)
    if format == "stock" and problems:
        raise ValueError("export --format stock: " + "; ".join(problems) + "; use --format remote-code")
    description = {
        "method": reward_model.method,
        "source": source,
        "encoder": encoder_config.to_dict(),
        "reward_stats": stats,
        "text_rule": _text_rule(encoder_config),
    }
    if format == "stock" or (format == "auto" and not problems):
        return export_stock(reward_model, encoder_config, directory, stats, description)
    return _export_remote_code(reward_model, encoder_config, directory, stats, description)


def _export_remote_code(
    reward_model: RewardModel, encoder_config: EncoderConfig, directory, stats: dict, description: dict
) -> Path:
    from pyro_irm.encoders.encoder import TextEncoder, end_of_turn_template
    from pyro_irm.export.hf_template.configuration_pyro_irm_reward import PyroIrmRewardConfig
    from pyro_irm.export.hf_template.modeling_pyro_irm_reward import PyroIrmRewardModel

    encoder = TextEncoder(replace(encoder_config, device="cpu", precision="float32", device_map=None))
    net = reward_model.model.reward_net
    linear = reward_model.config.reward_head == "linear"
    config = PyroIrmRewardConfig(
        encoder_config={k: v for k, v in encoder.model.config.to_dict().items() if k != "_name_or_path"},
        pooling=encoder.config.pooling,
        normalize=encoder.config.normalize,
        text_mode=encoder.config.text_mode,
        text_max_length=encoder.config.max_length,
        hidden_layer=encoder.config.layer,
        decoder_only=encoder.decoder_only,
        reward_hidden=[] if linear else list(reward_model.config.reward_hidden),
        head_bias=not linear,
        head_dropout=reward_model.config.dropout,
        embedding_dim=reward_model.embedding_dim,
        reward_mean=stats["mean"],
        reward_std=stats["std"] if stats["std"] > 0 else 1.0,
        num_labels=1,
    )
    model = PyroIrmRewardModel(config).eval()
    model.encoder.load_state_dict(encoder.model.state_dict())
    model.head.load_state_dict({k: v.detach().cpu() for k, v in net.state_dict().items()})
    config.register_for_auto_class()
    model.register_for_auto_class("AutoModelForSequenceClassification")
    description = {**description, "format": "remote-code", "encoder_identity": encoder.identity}
    encoder.tokenizer.model_max_length = encoder.config.max_length
    if encoder.config.text_mode == "chat":  # rows end at the end-of-turn token; a long one keeps its end
        encoder.tokenizer.chat_template = end_of_turn_template(encoder.tokenizer.chat_template)
        encoder.tokenizer.truncation_side = encoder.tokenizer.init_kwargs["truncation_side"] = (
            "left"  # init_kwargs: saved
        )
    with atomic_directory(directory, marker=EXPORT_FILE) as target:
        model.save_pretrained(target, safe_serialization=True)
        encoder.tokenizer.save_pretrained(target)
        (target / EXPORT_FILE).write_text(strict_json(description, indent=2) + "\n")
        (target / "README.md").write_text(_readme(description))
    return Path(directory)


def _text_rule(config: EncoderConfig) -> str:
    joined = {
        "pair": "the prompt and the response are tokenized as one sequence pair, tokenizer(prompt, "
        "response), truncated longest first",
        "response": "the response alone is tokenized, tokenizer(response), truncated",
        "chat": "the prompt is the user turn and the response the assistant turn, rendered and tokenized "
        "by the tokenizer's chat template, tokenizer.apply_chat_template(messages, tokenize=True) (no "
        "generation prompt), truncated on the tokenizer's truncation side",
    }[config.text_mode]
    pooled = {
        "mean": "mean-pooled over non-padding tokens",
        "cls": "read at the first token",
        "last": "read at the last non-padding token",
    }[config.pooling]
    layer = "the final hidden state" if config.layer == -1 else f"hidden layer {config.layer}"
    return (
        f"{joined} to {config.max_length} tokens; {layer} is {pooled}"
        f"{', scaled to unit length' if config.normalize else ''}, and the head maps it to one logit"
    )


def _readme(description: dict) -> str:
    stats = description["reward_stats"]
    return f"""# A pyro_irm reward model

Fit by pyro_irm ({description["method"]}) from {description["source"] or "a fitted model"}; the
encoder is `{description["encoder"]["model"]}`.

```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model = AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(DIR, trust_remote_code=True)
rewards = model.reward(tokenizer, prompts, responses)            # (N,) reward logits
tokens = tokenizer(prompts, responses, padding=True, truncation="longest_first",
                   max_length=model.config.text_max_length, return_tensors="pt")
logits = model(**tokens).logits                                   # (N, 1), the same rewards
```

**How texts are joined.** {description["text_rule"]}. Give the prompt and the response as the run
that fit the model read them (its prompt and response columns); chat turns are text already.

**The reward** is the logit of P(preferred | prompt, response): `sigmoid(reward)` is that
probability. Over the {stats["rows"]:,} training rows its mean is {stats["mean"]:.6g} and its standard
deviation {stats["std"]:.6g}, kept in `config.reward_mean` and `config.reward_std`;
`model.reward(..., normalized=True)` returns `(reward - mean) / std`, the scale RLHF trainers
(OpenRLHF's `--normalize_reward`, TRL's reward whitening) expect.

**Why remote code.** The model pools the encoder's token states as the fit did and puts its head on
the pooled vector; a stock `transformers` class computes only a bias-free linear map of a decoder's
last-token state, so `modeling_pyro_irm_reward.py` and `configuration_pyro_irm_reward.py` come with the
weights (they import only torch and transformers). Load with `trust_remote_code=True`. A run fit with
`--reward-head linear` over a decoder exports as a stock checkpoint instead.
"""
