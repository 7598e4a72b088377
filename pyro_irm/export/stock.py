"""Export a linear-head run over a decoder as the backbone's own ``*ForSequenceClassification`` class.

What TRL, OpenRLHF and vLLM load is a stock checkpoint: the base model plus a bias-free ``score``
layer read at the last non-padding token. A run fit with ``reward_head='linear'`` over the
last-token state of a decoder computes exactly that, so its head goes into ``score`` and the
directory loads with ``AutoModelForSequenceClassification.from_pretrained(DIR)``, no remote code.

Two traps are designed for here:

* the stock classes find the last token as the rightmost one that is not ``pad_token_id``, so a pad
  token that the chat template itself writes (Llama-3's ``<|eot_id|>``, a template ending in EOS)
  would make them read the position before it: :func:`choose_pad_token` picks a token that the
  template's rendering never holds, and adds one only when the vocabulary has none;
* their positions count from the first column, so rows must be padded on the right (the exported
  tokenizer says so); OpenRLHF computes positions from the attention mask and takes either side.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pyro_irm.atomic import atomic_directory, strict_json
from pyro_irm.encoders.config import EncoderConfig
from pyro_irm.export.layout import EXPORT_FILE

if TYPE_CHECKING:
    from pyro_irm.models.reward_model import RewardModel

ADDED_PAD_TOKEN = "<|pyro_irm_pad|>"


def stock_export_problems(
    reward_model: RewardModel, config: EncoderConfig, decoder_only: bool, model_type
) -> list[str]:
    """Why a run cannot be written as a stock sequence classifier (empty: it can).

    ``config`` is the run's resolved encoder configuration; ``decoder_only`` and ``model_type`` describe
    its backbone.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    problems = []
    if reward_model.config.reward_head != "linear":
        problems.append(
            "the reward head is an MLP, and a stock score layer is one bias-free linear map (fit with "
            "--reward-head linear)"
        )
    if not decoder_only:
        problems.append(
            f"the backbone ({model_type}) is not a decoder-only model; stock classifiers of encoders "
            "read a pooler over the first token, not the embedding this run was fit on"
        )
    elif model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        problems.append(f"transformers has no *ForSequenceClassification class for {model_type!r}")
    if config.pooling != "last":
        problems.append(f"the embedding is {config.pooling}-pooled; a stock class reads the last token")
    if config.layer != -1:
        problems.append(f"the embedding is hidden layer {config.layer}; a stock class reads the final state")
    if config.normalize:
        problems.append("the embedding is scaled to unit length, which a stock class never does")
    if config.text_mode == "separate":
        problems.append("text_mode 'separate' encodes prompt and response in two passes, not one sequence")
    return problems


def _rendered_ids(tokenizer, text_mode: str) -> list[int]:
    """Token ids of a probe row as the run tokenized its rows (template tokens included)."""
    from pyro_irm.encoders.encoder import chat_messages

    if text_mode == "chat":
        encoded = tokenizer.apply_chat_template(
            [chat_messages("a question", "an answer")], tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"][0])
    if text_mode == "pair":
        return list(tokenizer("a question", "an answer")["input_ids"])
    return list(tokenizer("an answer")["input_ids"])


def choose_pad_token(tokenizer, text_mode: str) -> tuple[str, bool]:
    """``(pad token, added)``: the first of the tokenizer's pad, EOS, UNK and other special tokens
    that a rendered row never holds; a new special token (``added``) when every one of them does."""
    used = set(_rendered_ids(tokenizer, text_mode))
    candidates = [
        tokenizer.pad_token,
        tokenizer.eos_token,
        tokenizer.unk_token,
        *tokenizer.all_special_tokens,
    ]
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    candidates += [token.content for _, token in sorted(decoder.items()) if getattr(token, "special", False)]
    for token in candidates:
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and token_id not in used:
            return token, False
    return ADDED_PAD_TOKEN, True


def export_stock(
    reward_model: RewardModel,
    encoder_config: EncoderConfig,
    directory: str | Path,
    stats: dict,
    description: dict,
) -> Path:
    """Write the backbone of ``encoder_config`` as its ``*ForSequenceClassification`` class with the
    run's linear head in ``score`` (whole or not at all); ``description`` goes to the export's JSON."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from pyro_irm.encoders.encoder import (
        WEIGHT_DTYPES,
        end_of_turn_template,
        is_decoder_only,
        resolve_model_location,
    )

    location, _ = resolve_model_location(encoder_config.model)
    backbone = AutoConfig.from_pretrained(location, revision=encoder_config.revision)
    problems = stock_export_problems(
        reward_model, encoder_config, is_decoder_only(backbone), backbone.model_type
    )
    if problems:
        raise ValueError("export --format stock: " + "; ".join(problems))
    tokenizer = AutoTokenizer.from_pretrained(location, revision=encoder_config.revision)
    pad_token, added = choose_pad_token(tokenizer, encoder_config.text_mode)
    if added:
        tokenizer.add_special_tokens({"pad_token": pad_token})
    else:
        tokenizer.pad_token = pad_token
    # init_kwargs too: a tokenizer class whose default pads on the left (Gemma's) saves it otherwise
    tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "right"
    tokenizer.model_max_length = encoder_config.max_length
    if encoder_config.text_mode == "chat":
        # Rows end at the end-of-turn token, as a rollout does; a long one keeps its end.
        tokenizer.chat_template = end_of_turn_template(tokenizer.chat_template)
        tokenizer.truncation_side = tokenizer.init_kwargs["truncation_side"] = "left"  # init_kwargs: saved
    dtype = WEIGHT_DTYPES[encoder_config.precision]
    model = AutoModelForSequenceClassification.from_pretrained(
        location, revision=encoder_config.revision, num_labels=1, dtype=dtype
    )
    if added:
        model.resize_token_embeddings(len(tokenizer))
    weight = reward_model.model.reward_net[-1].weight.detach().cpu()
    if tuple(weight.shape) != tuple(model.score.weight.shape):
        raise ValueError(
            f"export --format stock: the head has shape {tuple(weight.shape)} but the backbone's score "
            f"layer has {tuple(model.score.weight.shape)}; was the run fit on this encoder's embeddings?"
        )
    with torch.no_grad():
        model.score.weight.copy_(weight.to(dtype))
    config = model.config
    config.pad_token_id = tokenizer.pad_token_id
    config.get_text_config().pad_token_id = tokenizer.pad_token_id
    std = stats["std"] if stats["std"] > 0 else 1.0
    # reward_mean/std: pyro_irm's names; mean/std: what OpenRLHF's --normalize_reward reads.
    config.reward_mean, config.reward_std = stats["mean"], std
    config.mean, config.std = stats["mean"], std
    description = {
        **description,
        "format": "stock",
        "class": type(model).__name__,
        "pad_token": pad_token,
        "pad_token_added": added,
    }
    with atomic_directory(directory, marker=EXPORT_FILE) as target:
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        (target / EXPORT_FILE).write_text(strict_json(description, indent=2) + "\n")
        (target / "README.md").write_text(_readme(description, encoder_config))
    return Path(directory)


def _readme(description: dict, config: EncoderConfig) -> str:
    stats = description["reward_stats"]
    if config.text_mode == "chat":
        tokenize = """conversations = [
    [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    for prompt, response in zip(prompts, responses)
]
tokens = tokenizer.apply_chat_template(conversations, tokenize=True, padding=True, truncation=True,
                                       return_dict=True, return_tensors="pt")"""
    elif config.text_mode == "pair":
        tokenize = (
            'tokens = tokenizer(prompts, responses, padding=True, truncation=True, return_tensors="pt")'
        )
    else:
        tokenize = 'tokens = tokenizer(responses, padding=True, truncation=True, return_tensors="pt")'
    return f"""# A pyro_irm reward model: `{description["class"]}`

Fit by pyro_irm ({description["method"]}) from {description["source"] or "a fitted model"} on the
last-token state of `{config.model}`; its linear head is this checkpoint's `score` layer. It is a stock
`transformers` class: TRL, OpenRLHF (`--value_head_prefix score`) and vLLM load it as it is.

```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model = AutoModelForSequenceClassification.from_pretrained(DIR)
tokenizer = AutoTokenizer.from_pretrained(DIR)
{tokenize}
rewards = model(**tokens).logits[:, 0]         # (N,) reward logits, as `pyro-irm score` gives them
```

**How texts are read.** {description["text_rule"]}. The tokenizer keeps the chat template, pads on
the right with `{description["pad_token"]}` (a token no rendered row holds, so the last real token
is found), and truncates to its `model_max_length` ({config.max_length}), as the fit did.

**The reward** is the logit of P(preferred | prompt, response), with no bias term (a stock `score`
layer has none, so none was fitted). Over the {stats["rows"]:,} training rows its mean is
{stats["mean"]:.6g} and its standard deviation {stats["std"]:.6g}: `config.mean` and `config.std`
(OpenRLHF's `--normalize_reward` reads these), also as `config.reward_mean` and `config.reward_std`.
"""
