"""Median wall time of `opsctl render --stack prod --out DIR` (target: under 3 s), end to end in
a fresh process: spec load, alert rules, every builder, helm template of our chart per region,
and writing the files.

Run: .venv/bin/python -m benchmarks.render [--runs N] [--stack S]
Until `render` is registered in opsctl/cli/__init__.py, the child process registers it itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_S = 3.0
_CHILD = """
import sys
from opsctl.cli import app, run
from opsctl.cli import render
if "render" not in {c.name for c in app.registered_commands}:
    app.command("render")(render.render)
sys.exit(run(sys.argv[1:]))
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wall_times(stack: str, runs: int) -> tuple[list[float], list[float]]:
    """Wall seconds and CPU seconds (the process and its helm children) of each run."""
    with tempfile.TemporaryDirectory(prefix="bench-render-") as out:
        argv = [sys.executable, "-c", _CHILD, "-q", "render", "--stack", stack, "--out", out]
        subprocess.run(argv, capture_output=True, check=True)  # warm .pyc files and page cache
        times, cpu = [], []
        for _ in range(runs):
            cpu_before, start = _children_cpu(), time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
            cpu.append(_children_cpu() - cpu_before)
    return times, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--stack", default="prod")
    args = parser.parse_args()
    times, cpu = wall_times(args.stack, args.runs)
    median = statistics.median(times)
    result = {
        "benchmark": f"opsctl render --stack {args.stack}",
        "runs": args.runs,
        "median_s": round(median, 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        # CPU time tells what the wall time would be on an idle machine (others share this one).
        "median_cpu_s": round(statistics.median(cpu), 3),
        "target_s": TARGET_S,
        "meets_target": median < TARGET_S,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
