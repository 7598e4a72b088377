"""Rows to embeddings through an encoder and, when given, the on-disk cache."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pyro_irm.atomic import atomic_file, write_json_atomic
from pyro_irm.encoders.cache import EmbeddingCache, text_keys
from pyro_irm.encoders.encoder import TextEncoder

logger = logging.getLogger(__name__)

_FILL_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class Shard:
    """This process's share of a multi-process encoding: ``rank`` of ``world_size``, and a barrier
    that waits for every process (Lightning Fabric's, under ``embed --devices N``)."""

    rank: int
    world_size: int
    barrier: Callable[[], None]


def open_cache(encoder: TextEncoder, root: str | Path) -> EmbeddingCache:
    """The cache of ``encoder``'s embeddings under ``root``."""
    return EmbeddingCache(root, encoder.identity, encoder.identity_key, encoder.dim)


def embed_rows(
    prompts: Sequence[str],
    responses: Sequence[str],
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    out: np.ndarray | None = None,
    progress: bool = False,
    shard: Shard | None = None,
) -> np.ndarray | None:
    """``(N, dim)`` float32 embeddings of the rows, encoding only those the cache lacks.

    Rows with the same texts are encoded once. Each encoded batch is stored in the cache before the
    next one starts, so an interrupted run resumes where it stopped, and, because the encoder forms
    its batches from the rows alone, gives the same embeddings as an uninterrupted run.

    Args:
        prompts, responses: ``N`` texts each (a prompt may be a list of chat messages).
        encoder: the model that encodes missing rows.
        cache: where finished rows are kept between runs (none: encode everything, keep nothing).
        out: optional ``(N, dim)`` float32 array to fill (for example a ``.npy`` memory map).
        progress: show a progress bar on stderr (rows/s, and tokens/s beside it).
        shard: encode only this process's batches into ``cache`` and return None: the processes
            together encode exactly the batches one process would, so a later call that reads
            them back equals a one-process run.
    """
    num_rows = len(responses)
    if len(prompts) != num_rows:
        raise ValueError(f"prompts has {len(prompts)} rows but responses has {num_rows}")
    if out is None:
        out = np.empty((num_rows, encoder.dim), dtype=np.float32)
    elif out.shape != (num_rows, encoder.dim):
        raise ValueError(f"out has shape {out.shape}, expected ({num_rows}, {encoder.dim})")
    # A prompt given as turns is keyed by its messages: a text prompt never shares its entry.
    keys = text_keys([p if isinstance(p, str) else _turns_key(p) for p in prompts], responses)
    unique_keys, first_rows, inverse = np.unique(keys, return_index=True, return_inverse=True)
    if shard is not None and cache is None:
        raise ValueError("encoding in several processes needs the cache that they share")
    positions = _cached_positions(cache, unique_keys)
    if shard is not None:
        shard.barrier()  # every process decides what is missing before any of them writes
    missing = np.flatnonzero(positions < 0)
    missing = missing[np.argsort(first_rows[missing], kind="stable")]  # ties break by row order
    logger.info(
        "%d rows, %d distinct, %d cached, %d to encode",
        num_rows,
        len(unique_keys),
        len(unique_keys) - len(missing),
        len(missing),
    )
    fresh = None if cache is not None else np.empty((len(unique_keys), encoder.dim), dtype=np.float32)
    missing_prompts = [prompts[first_rows[u]] for u in missing]
    missing_responses = [responses[first_rows[u]] for u in missing]
    split = None if shard is None else (shard.rank, shard.world_size)
    started, tokens_before = time.perf_counter(), encoder.tokens_encoded
    with tqdm(total=len(missing), desc="encoding", unit="row", disable=None if progress else True) as bar:
        for rows, embeddings in encoder.iter_batches(missing_prompts, missing_responses, shard=split):
            if cache is not None:
                cache.append(unique_keys[missing[rows]], embeddings)
            else:
                fresh[missing[rows]] = embeddings
            bar.update(len(rows))
            tokens_per_second = (encoder.tokens_encoded - tokens_before) / (time.perf_counter() - started)
            bar.set_postfix_str(f"{tokens_per_second:,.0f} tokens/s", refresh=False)
    if shard is not None:
        shard.barrier()
        return None
    if cache is None:
        out[...] = fresh[inverse]
        return out
    positions = cache.lookup(unique_keys)[inverse]
    for start in range(0, num_rows, _FILL_CHUNK_ROWS):
        stop = min(start + _FILL_CHUNK_ROWS, num_rows)
        cache.read(positions[start:stop], out=out[start:stop])
    return out


def _cached_positions(cache: EmbeddingCache | None, keys: np.ndarray) -> np.ndarray:
    """``(K,)`` where each key's embedding lies in ``cache`` (-1: not there); a cached row whose
    checksum no longer matches is dropped, to be encoded again."""
    if cache is None:
        return np.full(len(keys), -1)
    positions = cache.lookup(keys)
    if len(corrupt := cache.verify(positions[positions >= 0])):
        logger.warning(
            "%s: %d cached rows no longer match their checksums (the file was changed or damaged); "
            "encoding them again",
            cache.directory,
            len(corrupt),
        )
        cache.invalidate(corrupt)
        positions = cache.lookup(keys)
    return positions


def _turns_key(turns: list[dict]) -> str:
    return "\x00turns:" + json.dumps(turns, sort_keys=True, ensure_ascii=False)


def save_embeddings(path: str | Path, embeddings: np.ndarray, metadata: dict) -> Path:
    """Write ``(N, dim)`` embeddings to ``path`` (``.npy``) with ``metadata`` beside it (``.json``).

    Each file appears whole or not at all; the old metadata goes first, so a write cut short never
    leaves new embeddings beside metadata that describes other rows.
    """
    path = Path(path)
    with atomic_file(path) as temporary:
        np.save(temporary, np.asarray(embeddings, dtype=np.float32))
        sidecar_path(path).unlink(missing_ok=True)
    write_json_atomic(sidecar_path(path), metadata, sort_keys=True)
    return path


def load_embeddings(path: str | Path) -> tuple[np.ndarray, dict]:
    """``(N, dim)`` float32 embeddings from a ``.npy`` file (memory-mapped) and their metadata."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"embeddings file {path} does not exist; make it with `pyro-irm embed`")
    try:
        embeddings = np.load(path, mmap_mode="c")  # copy-on-write: writable for torch, never copied
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(
            f"{path}: not a readable .npy array ({type(error).__name__}: {error}); "
            "write it with numpy.save or `pyro-irm embed`"
        ) from None
    if embeddings.ndim != 2 or embeddings.dtype != np.float32:
        raise ValueError(
            f"{path}: expected a (rows, dim) float32 array, got {embeddings.shape} {embeddings.dtype}"
        )
    _check_finite(path, embeddings)
    sidecar = sidecar_path(path)
    if not sidecar.exists():
        return embeddings, {}
    try:
        metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{sidecar}: not valid JSON ({error}); delete it, or embed the log again") from None
    if not isinstance(metadata, dict):
        raise ValueError(
            f"{sidecar}: holds a JSON {type(metadata).__name__}, not the object `pyro-irm embed` writes "
            f"beside {path.name}; delete it, or embed the log again"
        )
    return embeddings, metadata


def _check_finite(path: Path, embeddings: np.ndarray, chunk_rows: int = 65_536) -> None:
    """Raise naming the file, row and column of the first NaN or infinite value (scanned in chunks,
    so a memory map is never copied whole)."""
    for start in range(0, embeddings.shape[0], chunk_rows):
        chunk = embeddings[start : start + chunk_rows]
        bad = ~np.isfinite(chunk)
        if bad.any():
            row, column = np.argwhere(bad)[0]
            raise ValueError(
                f"{path}: row {start + row}, column {column} is {chunk[row, column]}; every embedding "
                "value must be finite. Re-embed the log (pyro-irm embed)"
            )


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")
