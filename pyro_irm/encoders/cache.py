"""An on-disk, memory-mapped embedding cache keyed by the encoder's identity and each row's text.

Layout of one encoder's cache, ``<root>/<identity key>/``:

* ``identity.json``: what produced the embeddings (model, revision, pooling, ...);
* ``embeddings.f32``: raw float32 rows, appended batch by batch and read through a memory map;
* ``keys.bin``: one 16-byte BLAKE2b digest of the row's texts per embedding row, same order.

A batch is appended embeddings first, keys second, each flushed to disk, so a killed writer leaves
at most a partial tail, which the next open cuts off: a row counts as cached only once both its
embedding and its key are complete. One writer per cache at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

KEY_BYTES = 16
_KEY_DTYPE = np.dtype(f"S{KEY_BYTES}")


def default_cache_root() -> Path:
    """``$PYRO_IRM_CACHE``, else ``$XDG_CACHE_HOME/pyro_irm/embeddings``, else ``~/.cache/...``."""
    if "PYRO_IRM_CACHE" in os.environ:
        return Path(os.environ["PYRO_IRM_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "pyro_irm" / "embeddings"


def text_keys(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """``(N,)`` 16-byte digests of each (prompt, response) pair."""
    keys = np.empty(len(responses), dtype=_KEY_DTYPE)
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        digest = hashlib.blake2b(digest_size=KEY_BYTES)
        # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        for text in (prompt, response):
            encoded = text.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
        keys[row] = digest.digest()
    return keys


class EmbeddingCache:
    """Embeddings of one encoder, stored under ``root / identity_key``.

    Args:
        root: the cache's root directory (created if missing).
        identity: the encoder's identity (written to ``identity.json`` and checked on reopen).
        identity_key: short digest naming the directory.
        dim: embedding width.
    """

    def __init__(self, root: str | Path, identity: dict, identity_key: str, dim: int):
        self.directory = Path(root) / identity_key
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._embeddings_path = self.directory / "embeddings.f32"
        self._keys_path = self.directory / "keys.bin"
        identity_path = self.directory / "identity.json"
        record = {"identity": identity, "dim": dim}
        if identity_path.exists():
            stored = json.loads(identity_path.read_text())
            if stored != record:
                raise ValueError(
                    f"embedding cache {self.directory} holds {stored}, not {record}; "
                    "remove that directory or use another cache root"
                )
        else:
            identity_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        self._num_rows = self._repair()
        self._keys = (
            np.fromfile(self._keys_path, dtype=_KEY_DTYPE) if self._num_rows else np.empty(0, _KEY_DTYPE)
        )
        self._sorted: np.ndarray | None = None
        self._memmap: np.memmap | None = None

    def _repair(self) -> int:
        """Cut both files to the rows that are complete in each; return that row count."""
        row_bytes = 4 * self.dim
        for path in (self._embeddings_path, self._keys_path):
            path.touch(exist_ok=True)
        complete = min(
            self._embeddings_path.stat().st_size // row_bytes,
            self._keys_path.stat().st_size // KEY_BYTES,
        )
        os.truncate(self._embeddings_path, complete * row_bytes)
        os.truncate(self._keys_path, complete * KEY_BYTES)
        return complete

    def __len__(self) -> int:
        return self._num_rows

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """``(M,)`` int64 cache row of each key, -1 where it is not cached."""
        positions = np.full(len(keys), -1, dtype=np.int64)
        if self._num_rows == 0 or len(keys) == 0:
            return positions
        if self._sorted is None:
            self._sorted = np.argsort(self._keys, kind="stable")
        sorted_keys = self._keys[self._sorted]
        at = np.searchsorted(sorted_keys, keys)
        inside = at < len(sorted_keys)
        hit = np.zeros(len(keys), dtype=bool)
        hit[inside] = sorted_keys[at[inside]] == keys[inside]
        positions[hit] = self._sorted[at[hit]]
        return positions

    def append(self, keys: np.ndarray, embeddings: np.ndarray) -> None:
        """Store ``(B,)`` keys with their ``(B, dim)`` float32 embeddings."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.shape != (len(keys), self.dim):
            raise ValueError(
                f"expected embeddings of shape ({len(keys)}, {self.dim}), got {embeddings.shape}"
            )
        keys = np.ascontiguousarray(keys, dtype=_KEY_DTYPE)
        for path, payload in ((self._embeddings_path, embeddings), (self._keys_path, keys)):
            with open(path, "ab") as handle:
                handle.write(payload.tobytes())
                handle.flush()
                os.fsync(handle.fileno())
        self._keys = np.concatenate([self._keys, keys])
        self._num_rows += len(keys)
        self._sorted = None
        self._memmap = None

    def read(self, positions: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Embeddings ``(M, dim)`` at cache rows ``positions``, gathered from the memory map."""
        if len(positions) and self._memmap is None:
            self._memmap = np.memmap(
                self._embeddings_path, dtype=np.float32, mode="r", shape=(self._num_rows, self.dim)
            )
        if out is None:
            out = np.empty((len(positions), self.dim), dtype=np.float32)
        if len(positions):
            out[...] = self._memmap[positions]
        return out
