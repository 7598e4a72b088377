"""What starting pyro_irm costs: each command below in a fresh interpreter, alternated, the median of
``--repeats`` wall-clock times, against ``import torch, pyro`` timed the same way.

    python benchmarks/import_time.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass (the interpreter)": [sys.executable, "-c", "pass"],
    "import torch, pyro": [sys.executable, "-c", "import torch, pyro"],
    "import pyro_irm": [sys.executable, "-c", "import pyro_irm"],
    "import pyro_irm; pyro_irm.fit (first use loads torch and Pyro)": [
        sys.executable,
        "-c",
        "import pyro_irm; pyro_irm.fit",
    ],
    "pyro-irm --help": [sys.executable, "-m", "pyro_irm.cli", "--help"],
    "pyro-irm fit --help": [sys.executable, "-m", "pyro_irm.cli", "fit", "--help"],
    "pyro-irm benchmark --help": [sys.executable, "-m", "pyro_irm.cli", "benchmark", "--help"],
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeats):  # alternate, so drift on a shared machine hits every case alike
        for name, command in CASES.items():
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times[name].append(time.perf_counter() - started)
    reference = statistics.median(times["import torch, pyro"])
    print("| command | median s | minus `import torch, pyro` |")
    print("| --- | ---: | ---: |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.2f} | {median - reference:+.2f} |")


if __name__ == "__main__":
    main()
