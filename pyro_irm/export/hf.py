"""Export a fitted reward model with its encoder as a ``transformers`` sequence classifier.

The directory holds ``config.json`` (with ``auto_map``), ``model.safetensors`` (encoder and head),
the tokenizer, the two code files the model class needs (``trust_remote_code``: they import torch
and transformers only), ``pyro_irm_export.json`` and a README. No stock ``transformers`` class
mean-pools an encoder and puts an MLP head on the pooled vector, so remote code is always written;
the README says so.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pyro_irm.atomic import atomic_directory
from pyro_irm.encoders.config import EncoderConfig

if TYPE_CHECKING:
    from pyro_irm.models.reward_model import RewardModel

EXPORT_FILE = "pyro_irm_export.json"


def reward_stats(rewards: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Mean and standard deviation of ``(N,)`` rewards, for normalizing them downstream."""
    values = np.asarray(rewards, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std()), "rows": int(values.size)}


def export_hf(
    reward_model: RewardModel,
    encoder_config: EncoderConfig,
    directory: str | Path,
    stats: dict[str, float] | None = None,
    source: str | None = None,
) -> Path:
    """Write ``reward_model`` with the encoder of ``encoder_config`` to ``directory`` (whole or not at
    all) so that ``AutoModelForSequenceClassification.from_pretrained(directory,
    trust_remote_code=True)`` loads it without pyro_irm.

    Args:
        reward_model: the fitted model; its reward network becomes the head.
        encoder_config: the encoder the model's embeddings came from.
        directory: the output directory (an earlier export there is replaced).
        stats: the reward's ``mean`` and ``std`` over the training rows (see :func:`reward_stats`).
        source: where the model came from (a run directory), for the README.

    Raises:
        ValueError: a ``text_mode='separate'`` encoder (two passes per row; not one sequence).
    """
    from pyro_irm.encoders.encoder import TextEncoder
    from pyro_irm.export.hf_template.configuration_pyro_irm_reward import PyroIrmRewardConfig
    from pyro_irm.export.hf_template.modeling_pyro_irm_reward import PyroIrmRewardModel

    if encoder_config.text_mode == "separate":
        raise ValueError(
            "export: text_mode='separate' encodes prompt and response in two passes, which one "
            "sequence classifier cannot; fit with text_mode 'pair' or 'response' to export"
        )
    stats = stats or {"mean": 0.0, "std": 1.0, "rows": 0}
    encoder = TextEncoder(replace(encoder_config, device="cpu", precision="float32"))
    net = reward_model.model.reward_net
    config = PyroIrmRewardConfig(
        encoder_config={k: v for k, v in encoder.model.config.to_dict().items() if k != "_name_or_path"},
        pooling=encoder_config.pooling,
        normalize=encoder_config.normalize,
        text_mode=encoder_config.text_mode,
        text_max_length=encoder_config.max_length,
        reward_hidden=list(reward_model.config.reward_hidden),
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
    description = {
        "method": reward_model.method,
        "source": source,
        "encoder": encoder_config.to_dict(),
        "encoder_identity": encoder.identity,
        "reward_stats": stats,
        "text_rule": _text_rule(encoder_config),
    }
    with atomic_directory(directory, marker=EXPORT_FILE) as target:
        model.save_pretrained(target, safe_serialization=True)
        encoder.tokenizer.save_pretrained(target)
        (target / EXPORT_FILE).write_text(json.dumps(description, indent=2) + "\n")
        (target / "README.md").write_text(_readme(description))
    return Path(directory)


def _text_rule(config: EncoderConfig) -> str:
    joined = (
        "the prompt and the response are tokenized as one sequence pair, tokenizer(prompt, response)"
        if config.text_mode == "pair"
        else "the response alone is tokenized, tokenizer(response)"
    )
    return (
        f"{joined}, truncated longest first to {config.max_length} tokens; the token states are "
        f"{'mean-pooled over non-padding tokens' if config.pooling == 'mean' else 'read at the first token'}"
        f"{', scaled to unit length' if config.normalize else ''}, and the head maps them to one logit"
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

**Why remote code.** The model mean-pools the encoder's token states and puts an MLP head on the
pooled vector; no stock `transformers` class computes that, so `modeling_pyro_irm_reward.py` and
`configuration_pyro_irm_reward.py` come with the weights (they import only torch and transformers).
Load with `trust_remote_code=True`.
"""
