"""Wall time of `opsctl cluster up` with the tools already built (target: under 30 s), of a
repeated `up` that finds the cluster healthy, and of `down`.

Each run starts from an empty state directory, so `up` really starts etcd, kube-apiserver,
controller-manager, scheduler and kwok, creates the fake nodes and waits for them to be Ready.

Run: .venv/bin/python -m benchmarks.cluster_up [--runs N] [--regions N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile

from benchmarks._opsctl import timed_opsctl

TARGET_UP_S = 30.0


def opsctl(args: list[str], env: dict[str, str]) -> float:
    elapsed, _ = timed_opsctl(args, env)
    return elapsed


def summary(times: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(times), 2),
        "min_s": round(min(times), 2),
        "max_s": round(max(times), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--regions", type=int, default=1, choices=(1, 2, 3))
    args = parser.parse_args()
    ups, reuses, downs = [], [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-kwok-") as state:
            env = dict(os.environ, OPSCTL_CLUSTER_STATE_DIR=state)
            command = ["cluster", "up", "--regions", str(args.regions)]
            try:
                ups.append(opsctl(command, env))
                reuses.append(opsctl(command, env))
            finally:
                downs.append(opsctl(["cluster", "down"], env))
        print(
            f"run {run + 1}: up {ups[-1]:5.1f} s, up again {reuses[-1]:4.1f} s, "
            f"down {downs[-1]:4.1f} s",
            file=sys.stderr,
        )
    median_up = statistics.median(ups)
    verdict = "meets" if median_up < TARGET_UP_S else "MISSES"
    print(
        f"opsctl cluster up --regions {args.regions}: median {median_up:.1f} s "
        f"({verdict} the {TARGET_UP_S:.0f} s target)",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "machine": platform.node(),
                "cpus": os.cpu_count(),
                "regions": args.regions,
                "runs": args.runs,
                "up": {**summary(ups), "target_s": TARGET_UP_S},
                "up_when_running": summary(reuses),
                "down": summary(downs),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
