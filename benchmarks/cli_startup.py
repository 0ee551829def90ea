"""Median wall time of `opsctl --help` and `opsctl spec show` (target: --help under 0.3 s).

Run: .venv/bin/python -m benchmarks.cli_startup [--runs N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

OPSCTL = str(Path(sys.executable).with_name("opsctl"))
COMMANDS = {
    "opsctl --help": [OPSCTL, "--help"],
    "opsctl spec show --stack prod": [OPSCTL, "spec", "show", "--stack", "prod"],
    "opsctl spec show --stack prod -o json": [
        OPSCTL,
        "spec",
        "show",
        "--stack",
        "prod",
        "-o",
        "json",
    ],
}
TARGETS = {"opsctl --help": 0.3}


def wall_times(argv: list[str], runs: int) -> list[float]:
    subprocess.run(argv, capture_output=True, check=True)  # warm the page cache and .pyc files
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    results = {}
    for name, argv in COMMANDS.items():
        times = wall_times(argv, args.runs)
        results[name] = {
            "median_s": round(statistics.median(times), 4),
            "min_s": round(min(times), 4),
            "max_s": round(max(times), 4),
            "runs": args.runs,
            "target_s": TARGETS.get(name),
        }
        target = TARGETS.get(name)
        verdict = (
            ""
            if target is None
            else ("  (meets target)" if statistics.median(times) < target else "  (MISSES target)")
        )
        print(
            f"{name:45s} median {statistics.median(times) * 1000:7.1f} ms{verdict}", file=sys.stderr
        )
    print(
        json.dumps(
            {"machine": platform.node(), "python": platform.python_version(), "results": results},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
