"""Data-parallel fitting on this machine: ``pyro-irm fit --devices 2`` (two CPU processes, gloo)
against one process, on the same simulated log of ``--rows`` rows of 384-dim embeddings, run one
after the other. Rows per second are the fits' own (``metrics.json``); wall time includes starting
the processes and reading the data.

    python benchmarks/distributed.py [--rows 100000] [--epochs 3] [--inference fused]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--inference", default="fused")
    args = parser.parse_args()
    from pyro_irm import SimulationConfig, simulate
    from pyro_irm.data.logs import write_records

    data = simulate(SimulationConfig(num_rows=args.rows, embedding_dim=384, seed=0))
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        rows = [
            {"prompt": f"p{i}", "response": f"r{i}", "action": int(a), "position": float(c[0])}
            for i, (a, c) in enumerate(zip(data.actions.numpy(), data.context.numpy(), strict=True))
        ]
        write_records(root / "log.jsonl", rows)
        np.save(root / "emb.npy", data.embeddings.numpy())
        print(f"{args.rows:,} rows x 384, {args.epochs} epochs, inference {args.inference}, batch 1024\n")
        print("| processes | rows/s (fit) | wall s | x one process (rows/s) |")
        print("| ---: | ---: | ---: | ---: |")
        baseline = None
        for devices in (1, 2):
            command = [sys.executable, "-m", "pyro_irm.cli", "fit", str(root / "log.jsonl")]
            command += ["--embeddings", str(root / "emb.npy"), "--context-col", "position", "--quiet"]
            command += ["--max-epochs", str(args.epochs), "--patience", str(args.epochs + 1)]
            command += ["--validation-fraction", "0.1", "--inference", args.inference]
            command += ["--devices", str(devices), "--out", str(root / f"run{devices}")]
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            wall = time.perf_counter() - started
            fit = json.loads((root / f"run{devices}" / "metrics.json").read_text())["fit"]
            rate = fit["rows_per_second"]  # the first process times epochs that cover every row
            baseline = baseline or rate
            print(f"| {devices} | {rate:,.0f} | {wall:.1f} | {rate / baseline:.2f} |")


if __name__ == "__main__":
    main()
