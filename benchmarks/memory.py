"""Peak memory of a fit on 1M rows of 384-dim float32 embeddings, as a multiple of their size, and
the whole process's peak resident memory.

The embeddings are written to a ``.npy`` file and memory-mapped, as a user's cached embeddings
would be; the fit must not copy them, and gives the mapped pages back between minibatches
(``FeedbackData.release_pages``). Peak resident memory is read from the kernel (``ru_maxrss``)
and reported above the process's resident memory after imports, and as a whole.

    python benchmarks/memory.py [--rows 1000000] [--inference enumerate]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time

import numpy as np


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_embeddings(path: str, rows: int, dim: int) -> None:
    """Fill a .npy file chunk by chunk (run in a child process, so its pages never count here)."""
    writer = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 100_000):
        stop = min(start + 100_000, rows)
        writer[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    writer.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--inference", default="enumerate", choices=("enumerate", "amortized", "fused"))
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()

    import torch

    from pyro_irm import FeedbackData, TrainConfig, fit

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "embeddings.npy")
        child = multiprocessing.get_context("spawn").Process(
            target=write_embeddings, args=(path, args.rows, args.dim)
        )
        child.start()
        child.join()
        rng = np.random.default_rng(1)
        actions = (rng.random(args.rows) < 0.3).astype(np.float32)
        context = rng.standard_normal((args.rows, 1)).astype(np.float32)

        baseline = resident_mib()
        embeddings = np.load(path, mmap_mode="c")  # copy-on-write map: nothing is read yet
        size_mib = embeddings.nbytes / 2**20
        started = time.perf_counter()
        data = FeedbackData(embeddings, actions, context=context)
        result = fit(
            data,
            TrainConfig(inference=args.inference, max_epochs=1, batch_size=args.batch_size, progress=False),
        )
        seconds = time.perf_counter() - started
        assert data.embeddings.data_ptr() == torch.from_numpy(embeddings).data_ptr()
        peak = peak_mib() - baseline
        print(f"{args.rows:,} x {args.dim} float32 embeddings: {size_mib:,.0f} MiB, memory-mapped")
        print(
            f"fit ({args.inference}, 1 epoch, {seconds:.0f} s): peak resident memory above "
            f"imports {peak:,.0f} MiB = {peak / size_mib:.2f}x the embeddings; the whole process's "
            f"peak {peak_mib():,.0f} MiB (imports {baseline:,.0f} MiB)"
        )
        print(f"held-out ELBO after 1 epoch: {result.history.validation_score[-1]:.4f}")


if __name__ == "__main__":
    main()
