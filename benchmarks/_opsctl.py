"""`opsctl` as the benchmarks time it: one fresh process per command, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping

_RUN = "import sys\nfrom opsctl.cli import run\nsys.exit(run(sys.argv[1:]))\n"


def timed_opsctl(args: list[str], env: Mapping[str, str] | None = None) -> tuple[float, str]:
    """Wall seconds of ``opsctl <args>`` and its stderr; exits naming the command if it fails."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _RUN, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"opsctl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed, done.stderr
