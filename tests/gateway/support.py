"""Helpers shared by the gateway's integration tests."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable, Mapping


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process a test started, frozen (SIGSTOP) or not: SIGCONT and SIGTERM, SIGKILL
    after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def assert_increased(
    before: Mapping[str, float], after: Mapping[str, float], names: Iterable[str]
) -> None:
    """Each series in ``names`` is higher in ``after`` than in ``before`` (absent: 0)."""
    for name in names:
        assert after[name] > before.get(name, 0), f"{name}: {before.get(name, 0)} -> {after[name]}"
