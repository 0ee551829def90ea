"""`opsctl demo`: local stack up, smoke load test, verdict and report path, stack down."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from opsctl.paths import REPO_ROOT

DEMO_STATE = REPO_ROOT / ".state" / "demo"


@pytest.mark.e2e
def test_demo_passes_and_leaves_nothing_running(opsctl) -> None:
    result = opsctl("demo")
    assert result.exit_code == 0, result.stderr[-3000:]
    verdict_line = result.stdout.strip().splitlines()[-1]
    assert verdict_line.startswith("verdict: pass  report: ")
    report = Path(verdict_line.split("report: ")[1])
    assert report.is_file()
    assert "<svg" in report.read_text()
    assert not DEMO_STATE.exists()  # stopped and wiped
    leftovers = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if any(str(DEMO_STATE) in part for part in (p.info["cmdline"] or []))
    ]
    assert leftovers == []


@pytest.mark.unit
def test_demo_with_a_bad_profile_starts_nothing(opsctl) -> None:
    result = opsctl("demo", "--profile", "no-such-profile")
    assert result.exit_code == 2
    assert "unknown load profile" in result.stderr
    assert not DEMO_STATE.exists()
