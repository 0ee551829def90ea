"""`opsctl drill run region-down` on the session's multi-region stack (staging), short: a
region frozen under load, failed over, woken up as a zombie and restored; the verdict (nothing
acked lost, no (conversation, seq) naming two message ids) and the measured RPO and failover
time (issue 13 part 6). The stack's regions are back at their original homes afterwards: other
tests share it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from opsctl.errors import ExitCode, OpsctlError
from opsctl.local import LocalStack
from opsctl.region import LocalRegions, Request, read_map, restore
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration

DOWN = "eu-central"


def _home_again(stack: LocalStack) -> None:
    """Every process awake and running, and every region's shards back home."""
    for row in stack.status():
        if row.pid is not None:
            os.kill(row.pid, signal.SIGCONT)
    stack.up()
    regions = LocalRegions.of(stack, stack.config.spec_stack)
    for name in regions.names:
        deadline = time.monotonic() + 240
        while True:
            try:
                if restore(regions, Request(name)).complete:
                    break
            except OpsctlError:  # its dispatchers do not report yet
                pass
            assert time.monotonic() < deadline, f"{name} not restored"
            time.sleep(2)
    view = read_map(regions)
    assert view.draining == 0
    assert all(share > 0 for share in view.home_share.values()), view


def test_region_down_loses_nothing_and_reports_rpo_and_failover_time(
    multi_region_stack: LocalStack, opsctl: OpsctlRunner, tmp_path: Path
) -> None:
    stack = multi_region_stack
    report_dir = tmp_path / "region-down"
    try:
        result = opsctl(
            "drill",
            "run",
            "region-down",
            "--region",
            DOWN,
            "--duration",
            "8",
            "--users",
            "6",
            "--state-dir",
            str(stack.config.state_dir),
            "--report-dir",
            str(report_dir),
            "-o",
            "json",
        )
    finally:
        _home_again(stack)
    verdict = json.loads(result.stdout) if result.stdout else {}
    assert result.exit_code == ExitCode.OK, (result.stderr, verdict.get("checks"))
    figures, accounting = verdict["figures"], verdict["accounting"]
    assert accounting["lost"] == 0
    assert accounting["delivered"] == accounting["acked"] >= 20
    assert accounting["duplicated"] == 0
    assert figures["conflicts"] == 0
    checks = {c["name"]: c["ok"] for c in verdict["checks"]}
    assert checks["no (conversation, seq) with two message ids"] is True
    assert checks["failover complete"] is True
    assert checks["restore complete"] is True
    assert figures["region"] == DOWN
    assert figures["rpo_messages"] >= 0
    assert figures["rpo_s"] >= 0
    assert figures["failover_s"] > 0
    assert figures["replication_lag_at_freeze_s"] is not None
    assert figures["freeze_to_delivery_s"] is not None
    assert json.loads((report_dir / "drill.json").read_text())["status"] == "pass"
    print(
        f"region-down: RPO {figures['rpo_messages']} messages ({figures['rpo_s']} s), lag at the "
        f"freeze {figures['replication_lag_at_freeze_s']:.2f} s, failover {figures['failover_s']} s"
        f" (command {figures['failover_command_s']} s), freeze to delivery "
        f"{figures['freeze_to_delivery_s']} s, recovered in {verdict['recover_s']:.1f} s"
    )
