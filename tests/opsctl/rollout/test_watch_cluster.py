"""`status --watch` in its own process against a live rollout: it redraws, and Ctrl-C stops it
with exit 130 (the interrupted code) without touching the rollout."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from opsctl.errors import ExitCode
from opsctl.paths import REPO_ROOT
from tests.opsctl.rollout.conftest import Gateway
from tests.opsctl.rollout.harness import NEW_IMAGE, MetricsLab, killed_on_exit
from tests.opsctl.rollout.test_control_cluster import background_start, finish
from tests.support import wait_for

pytestmark = pytest.mark.integration
WATCH = ["rollout", "status", "--watch", "--every", "0.5"]


def test_status_watch_redraws_and_stops_on_ctrl_c(
    gateway: Gateway, lab: MetricsLab, tmp_path: Path
) -> None:
    driver = background_start(gateway, lab)
    out_path, err_path = tmp_path / "watch.out", tmp_path / "watch.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "tests.opsctl.rollout.cli_main", *WATCH, *gateway.target()],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
        )
    with killed_on_exit(watcher):
        wait_for(
            "two complete refreshes",  # the third has begun, so two tables are whole
            lambda: watcher.poll() is not None or "-- refresh 3 " in out_path.read_text(),
            timeout=30,
        )
        assert watcher.poll() is None, err_path.read_text()  # still watching a running rollout
        watcher.send_signal(signal.SIGINT)
        code = watcher.wait(timeout=15)
    output = out_path.read_text()
    assert code == ExitCode.INTERRUPTED, err_path.read_text()
    errors = err_path.read_text()
    assert "stopped watching; rollout" in errors
    assert "is not affected" in errors
    assert "Traceback" not in errors
    refreshes = [line for line in output.splitlines() if line.startswith("-- refresh ")]
    assert len(refreshes) >= 3
    # One table per refresh (the last may have been cut short by the signal).
    assert len(refreshes) - 1 <= output.count("REGION") <= len(refreshes)
    region_rows = [line.split() for line in output.splitlines() if line.startswith("local ")]
    assert len(region_rows) >= 2
    assert region_rows[0][1] == "canary"  # the region's phase while the canary runs
    assert {row[1] for row in region_rows} <= {"canary", "promoting", "draining", "baking"}

    # The rollout was only watched: it carries on and finishes.
    code, _, driver_errors = finish(driver)
    assert code == ExitCode.OK, driver_errors
    assert gateway.image() == NEW_IMAGE
