"""An on-disk, memory-mapped embedding cache keyed by the encoder's identity and each row's text.

Layout of one encoder's cache, ``<root>/<identity key>/``:

* ``identity.json``: what produced the embeddings (model, revision, pooling, ...);
* ``embeddings.f32``: raw float32 rows, appended batch by batch and read through a memory map;
* ``keys.bin``: one 16-byte BLAKE2b digest of the row's texts per embedding row, same order;
* ``checks.bin``: one 8-byte checksum of each embedding row's bytes, same order.

A batch is appended embeddings first, checksums second, keys last, each flushed to disk, so a killed
writer leaves at most a partial tail, which the next open cuts off: a row counts as cached only once
its embedding, checksum and key are all complete. A row whose bytes no longer match its checksum
(a disk fault, a stray write) is found when it is next read and is encoded again.

Several processes may write one cache at once (two ``embed`` runs, or the shards of ``embed
--devices N``): every write, repair and invalidation holds the cache's file lock (``.lock``, through
``filelock``), and each writer first takes in the rows the others appended, so the row numbers it
hands out always name the rows it means.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from filelock import FileLock

from pyro_irm.atomic import atomic_file, write_json_atomic

KEY_BYTES = 16
_KEY_DTYPE = np.dtype(f"S{KEY_BYTES}")
CHECK_BYTES = 8
# A key no digest equals in practice: an invalidated row's key is overwritten with it.
_DEAD_KEY = b"\x00" * KEY_BYTES
_VERIFY_CHUNK_ROWS = 65_536


def row_checksums(embeddings: np.ndarray) -> np.ndarray:
    """``(B,)`` uint64 checksums of ``(B, dim)`` float32 rows.

    Each row's 32-bit words are multiplied by fixed odd weights and summed modulo 2**64: any change
    to one word changes the sum (an odd weight has an inverse modulo 2**64), and the computation is
    vectorized, so verifying a million rows costs a fraction of a second.
    """
    words = np.ascontiguousarray(embeddings, dtype=np.float32).view(np.uint32).astype(np.uint64)
    weights = np.random.default_rng(0x5EED).integers(0, 2**63, size=words.shape[1], dtype=np.uint64)
    weights |= np.uint64(1)
    with np.errstate(over="ignore"):
        return (words * weights).sum(axis=1, dtype=np.uint64) + np.uint64(words.shape[1])


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


def rows_fingerprint(prompts: Sequence[str], responses: Sequence[str]) -> str:
    """A digest of the rows' texts in order: embeddings saved with it belong to exactly these rows."""
    return hashlib.blake2b(text_keys(prompts, responses).tobytes(), digest_size=16).hexdigest()


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
        for parent in (Path(root), self.directory):
            if parent.exists() and not parent.is_dir():
                raise ValueError(
                    f"embedding cache: {parent} is a file, not a directory; give another cache root "
                    "(--cache-dir or $PYRO_IRM_CACHE) or move that file"
                )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._embeddings_path = self.directory / "embeddings.f32"
        self._keys_path = self.directory / "keys.bin"
        self._checks_path = self.directory / "checks.bin"
        self._lock = FileLock(str(self.directory / ".lock"))
        identity_path = self.directory / "identity.json"
        record = {"identity": identity, "dim": dim}
        with self._lock:
            if identity_path.exists():
                try:
                    stored = json.loads(identity_path.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError) as error:
                    raise ValueError(
                        f"{identity_path}: the embedding cache's identity file is corrupt ({error}); "
                        f"delete the directory {self.directory} and its rows are encoded again"
                    ) from None
                if stored != record:
                    raise ValueError(
                        f"embedding cache {self.directory} holds {stored}, not {record}; "
                        "remove that directory or use another cache root"
                    )
            else:
                write_json_atomic(identity_path, record, sort_keys=True)
            self._add_missing_checksums()
            self._num_rows = self._repair()
            self._keys = (
                np.fromfile(self._keys_path, dtype=_KEY_DTYPE) if self._num_rows else np.empty(0, _KEY_DTYPE)
            )
        self._sorted: np.ndarray | None = None
        self._memmap: np.memmap | None = None

    def _take_in_new_rows(self) -> None:
        """Read the keys of rows that other writers appended since this cache last looked (call with
        the lock held: then every row in the files is complete)."""
        on_disk = self._keys_path.stat().st_size // KEY_BYTES
        if on_disk > self._num_rows:
            with open(self._keys_path, "rb") as handle:
                handle.seek(self._num_rows * KEY_BYTES)
                fresh = np.frombuffer(handle.read((on_disk - self._num_rows) * KEY_BYTES), dtype=_KEY_DTYPE)
            self._keys = np.concatenate([self._keys, fresh])
            self._num_rows = on_disk
            self._sorted = None
            self._memmap = None

    def _add_missing_checksums(self) -> None:
        """A cache written before checksums existed gets them now, for the rows it holds."""
        if self._checks_path.exists() or not self._embeddings_path.exists():
            return
        rows = self._embeddings_path.stat().st_size // (4 * self.dim)
        embeddings = np.memmap(self._embeddings_path, dtype=np.float32, mode="r", shape=(rows, self.dim))
        with atomic_file(self._checks_path) as temporary, open(temporary, "wb") as handle:
            for start in range(0, rows, _VERIFY_CHUNK_ROWS):
                handle.write(row_checksums(embeddings[start : start + _VERIFY_CHUNK_ROWS]).tobytes())

    def _repair(self) -> int:
        """Cut the files to the rows that are complete in each; return that row count."""
        row_bytes = 4 * self.dim
        sizes = (
            (self._embeddings_path, row_bytes),
            (self._checks_path, CHECK_BYTES),
            (self._keys_path, KEY_BYTES),
        )
        for path, _ in sizes:
            path.touch(exist_ok=True)
        complete = min(path.stat().st_size // size for path, size in sizes)
        for path, size in sizes:
            os.truncate(path, complete * size)
        return complete

    def __len__(self) -> int:
        return self._num_rows

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """``(M,)`` int64 cache row of each key, -1 where it is not cached."""
        positions = np.full(len(keys), -1, dtype=np.int64)
        with self._lock:
            self._take_in_new_rows()
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
        checks = row_checksums(embeddings)
        with self._lock:
            self._take_in_new_rows()
            for path, payload in (
                (self._embeddings_path, embeddings),
                (self._checks_path, checks),
                (self._keys_path, keys),
            ):
                with open(path, "ab") as handle:
                    handle.write(payload.tobytes())
                    handle.flush()
                    os.fsync(handle.fileno())
            self._keys = np.concatenate([self._keys, keys])
            self._num_rows += len(keys)
        self._sorted = None
        self._memmap = None

    def verify(self, positions: np.ndarray) -> np.ndarray:
        """The cache rows among ``positions`` whose embedding no longer matches its checksum."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 0:
            return positions
        stored = np.memmap(self._checks_path, dtype=np.uint64, mode="r", shape=(self._num_rows,))
        bad = []
        for start in range(0, len(positions), _VERIFY_CHUNK_ROWS):
            chunk = np.sort(positions[start : start + _VERIFY_CHUNK_ROWS])
            mismatch = row_checksums(self.read(chunk)) != stored[chunk]
            bad.append(chunk[mismatch])
        return np.concatenate(bad)

    def invalidate(self, positions: np.ndarray) -> None:
        """Forget the rows at ``positions`` (their keys stop matching), so they are encoded again."""
        if len(positions) == 0:
            return
        with self._lock, open(self._keys_path, "r+b") as handle:
            for position in np.asarray(positions, dtype=np.int64):
                handle.seek(int(position) * KEY_BYTES)
                handle.write(_DEAD_KEY)
            handle.flush()
            os.fsync(handle.fileno())
        self._keys[positions] = _DEAD_KEY
        self._sorted = None

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
