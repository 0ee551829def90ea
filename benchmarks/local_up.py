"""Wall time of `opsctl local up`: cold (empty state dir: Kafka storage formatted, Cassandra
bootstraps its system keyspaces, migrations create topics and tables) and warm (data kept from
the previous run), plus a repeated `up` on the running stack and `down`.

Each run uses a fresh temporary state dir on a free block of ports and ends with `down --wipe`.
The per-component times are the "healthy in N s" figures `up` prints; ``rss_mib`` is the sum of
the resident memory of every process of the stack right after the cold `up`.

``--stack staging`` measures the multi-region stack (every region of the spec, MirrorMaker 2,
the witness DC) the same way.

Run: .venv/bin/python -m benchmarks.local_up [--runs N] [--infra-only] [--stack STACK]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
from pathlib import Path

from benchmarks._opsctl import timed_opsctl
from opsctl.local import PORT_BLOCK_SIZE, find_free_port_block
from opsctl.local._procs import marked_processes
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack

_HEALTHY = re.compile(r"(\S+)\s+(?:healthy|done) in ([0-9.]+)s")


def opsctl(args: list[str]) -> tuple[float, dict[str, float]]:
    """Wall seconds, and the per-component "healthy in N s" figures it printed."""
    elapsed, stderr = timed_opsctl(args, {**os.environ, "COLUMNS": "200"})
    return elapsed, {name: float(seconds) for name, seconds in _HEALTHY.findall(stderr)}


def rss_mib(state_dir: Path) -> float:
    """Resident memory of every process of the stack in ``state_dir``, summed."""
    total = 0
    for proc in marked_processes(str(state_dir.resolve())):
        try:
            total += proc.memory_info().rss
        except OSError:
            continue
    return round(total / 2**20, 1)


def one_run(infra_only: bool, stack: str) -> dict[str, object]:
    regions = len(load_stack(DEFAULT_INFRA_DIR, stack).regions)
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        common = ["--state-dir", f"{tmp}/state"]
        base = find_free_port_block(PORT_BLOCK_SIZE * regions)
        up = ["local", "up", "--stack", stack, *common, "--base-port", str(base)]
        if infra_only:
            up.append("--infra-only")
        cold, cold_parts = opsctl(up)
        rss = rss_mib(Path(tmp) / "state")
        again, _ = opsctl(up)
        down, _ = opsctl(["local", "down", *common])
        warm, warm_parts = opsctl(up)
        opsctl(["local", "down", *common, "--wipe"])
    return {
        "cold_up_s": round(cold, 2),
        "warm_up_s": round(warm, 2),
        "repeat_up_s": round(again, 2),
        "down_s": round(down, 2),
        "rss_mib": rss,
        "cold_parts_s": cold_parts,
        "warm_parts_s": warm_parts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--infra-only", action="store_true", help="without the IM processes")
    parser.add_argument("--stack", default="local", help="the stack spec to run (default local)")
    args = parser.parse_args()
    runs = [one_run(args.infra_only, args.stack) for _ in range(args.runs)]
    print(
        f"opsctl local up --stack {args.stack} "
        f"({'infra only' if args.infra_only else 'full stack'}), "
        f"{args.runs} run(s), {os.cpu_count()} CPUs"
    )
    for key in ("cold_up_s", "warm_up_s", "repeat_up_s", "down_s", "rss_mib"):
        values = [float(run[key]) for run in runs]  # type: ignore[arg-type]
        print(f"  {key:<12} median {statistics.median(values):6.2f}  all {values}")
    for label in ("cold_parts_s", "warm_parts_s"):
        parts = runs[-1][label]
        print(f"  {label:<12} (last run) {json.dumps(parts)}")
    document = {"benchmark": "local_up", "stack": args.stack, "infra_only": args.infra_only}
    print(json.dumps({**document, "runs": runs}))


if __name__ == "__main__":
    main()
