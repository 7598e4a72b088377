"""Loopback load test of ``pyro-irm serve`` against scoring in-process, same texts, same run.

Fits a small run from text (the default encoder), then sends ``POST /get_reward`` requests of 8
responses each from 1, 8 and 32 concurrent clients on 127.0.0.1 (bounded in count and time), and
times the same requests scored in-process by the same :class:`TextScorer`. Prints a Markdown table.

    python benchmarks/serve_load.py [--requests 96] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pyro_irm.cli import main
from pyro_irm.data.logs import write_records
from pyro_irm.runs import Run
from pyro_irm.serve import TextScorer

WORDS = "the reward model user copies code answer short long helpful wrong python list sort".split()


def _texts(count: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    prompts = [f"question {i // 8} about sorting a list in python" for i in range(count)]
    responses = [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 120)))) for _ in range(count)]
    return prompts, responses


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url: str, payload: dict) -> float:
    started = time.perf_counter()
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert len(json.loads(response.read())["rewards"]) == len(payload["prompts"])
    return time.perf_counter() - started


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    return float(np.percentile(latencies, 50) * 1000), float(np.percentile(latencies, 99) * 1000)


def _load(url: str, queries: list, clients: int, seconds: float) -> tuple[list[float], float]:
    """Latencies of every request sent by ``clients`` threads sharing the queries; the elapsed time."""
    latencies: list[float] = []
    started = time.perf_counter()

    def client(index: int) -> None:
        for k in range(index, len(queries), clients):
            if time.perf_counter() - started > seconds:
                return
            latencies.append(_post(url, {"prompts": queries[k][0], "responses": queries[k][1]}))

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return latencies, time.perf_counter() - started


def main_benchmark(requests: int, seconds: float, per_request: int = 8) -> str:
    root = Path(tempfile.mkdtemp(prefix="serve_load_"))
    prompts, responses = _texts(400, seed=0)
    rng = np.random.default_rng(1)
    pairs = zip(prompts, responses, strict=True)
    write_records(
        root / "train.jsonl",
        [{"prompt": p, "response": r, "action": int(rng.random() < 0.3)} for p, r in pairs],
    )
    assert main(["fit", str(root / "train.jsonl"), "--out", str(root / "run"), "--method", "naive",
                 "--max-epochs", "3", "--cache-dir", str(root / "cache"), "--quiet"]) == 0  # fmt: skip
    queries = [_texts(per_request, seed=100 + i) for i in range(requests)]

    scorer = TextScorer(Run.load(root / "run"))
    scorer(*queries[0])  # warm up
    in_process = []
    for batch_prompts, batch_responses in queries:
        started = time.perf_counter()
        scorer(batch_prompts, batch_responses)
        in_process.append(time.perf_counter() - started)
    base_p50, base_p99 = _percentiles(in_process)
    rows = [("in-process TextScorer, 1 caller", len(in_process) / sum(in_process), base_p50, base_p99)]

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pyro_irm.cli", "serve", str(root / "run"), "--port", str(port),
         "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/get_reward"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(server.communicate()[1]) from None
                time.sleep(0.2)
        _post(url, {"prompts": queries[0][0], "responses": queries[0][1]})  # warm up
        for clients in (1, 8, 32):
            latencies, elapsed = _load(url, queries, clients, seconds)
            p50, p99 = _percentiles(latencies)
            rows.append((f"server, {clients} concurrent client(s)", len(latencies) / elapsed, p50, p99))
        fairness = _fairness(url)
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read())
    finally:
        server.terminate()
        server.communicate(timeout=30)

    lines = [
        f"{per_request} responses per request, {requests} requests per row; batches formed by the server: "
        f"{health['batches']} for {health['rows']:,} rows.",
        "",
        "| caller | requests/s | rows/s | p50 latency (ms) | p99 latency (ms) | throughput / in-process |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    base_rate = rows[0][1]
    for name, rate, p50, p99 in rows:
        ratio = rate / base_rate
        lines.append(
            f"| {name} | {rate:.1f} | {rate * per_request:.0f} | {p50:.1f} | {p99:.1f} | {ratio:.2f}x |"
        )
    alone, behind, large = fairness
    lines += [
        "",
        f"Fairness: a 1-row request takes {alone * 1000:.0f} ms alone (median of 5) and "
        f"{behind * 1000:.0f} ms when sent 0.5 s after a 4,096-row request, which takes {large:.1f} s.",
    ]
    return "\n".join(lines)


def _fairness(url: str) -> tuple[float, float, float]:
    """``(seconds of a 1-row request alone, the same sent while a 4,096-row request is scored,
    seconds of the large one)``."""
    small = _texts(1, seed=7)
    alone = float(np.median([_post(url, {"prompts": small[0], "responses": small[1]}) for _ in range(5)]))
    large = _texts(4096, seed=8)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_post, url, {"prompts": large[0], "responses": large[1]})
        time.sleep(0.5)
        behind = _post(url, {"prompts": small[0], "responses": small[1]})
        large_seconds = running.result()
    return alone, behind, large_seconds


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=96, help="requests per row of the table")
    parser.add_argument("--seconds", type=float, default=60.0, help="most seconds per row")
    arguments = parser.parse_args()
    print(main_benchmark(arguments.requests, arguments.seconds))
