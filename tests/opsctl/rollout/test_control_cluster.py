"""pause, resume, abort, undo, status and history from another process (another machine, as
far as the rollout knows), and a driver killed mid-rollout then resumed."""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import pytest

from opsctl.errors import ExitCode
from tests.opsctl.rollout.conftest import Gateway
from tests.opsctl.rollout.harness import (
    NEW_IMAGE,
    OLD_IMAGE,
    MetricsLab,
    killed_on_exit,
    opsctl_subprocess,
)
from tests.opsctl.rollout.test_canary_cluster import start_args
from tests.support import OpsctlRunner, wait_for

pytestmark = pytest.mark.integration


def common(gateway: Gateway) -> list[str]:
    return [*gateway.target(), "--output", "json"]


def background_start(gateway: Gateway, lab: MetricsLab) -> subprocess.Popen[str]:
    process = opsctl_subprocess(start_args(gateway, lab.url, steps="25,50,100"))
    wait_for(
        "the canary to run",
        lambda: process.poll() is not None or bool(gateway.pods("im.platform/track=canary")),
    )
    assert process.poll() is None, process.communicate()
    return process


def ask(opsctl_rollout: OpsctlRunner, gateway: Gateway, command: str) -> Any:
    """`opsctl rollout <command>` for the test's gateway, which must exit 0: its JSON report."""
    result = opsctl_rollout("rollout", command, *common(gateway))
    assert result.exit_code == ExitCode.OK, result.stderr
    return json.loads(result.stdout)


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def test_pause_resume_then_undo(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, lab: MetricsLab
) -> None:
    with killed_on_exit(background_start(gateway, lab)) as driver:
        assert ask(opsctl_rollout, gateway, "pause")["phase"] == "paused"
        code, out, err = finish(driver)
    assert code == ExitCode.INCONCLUSIVE, err
    assert json.loads(out)["phase"] == "paused"
    assert "paused by" in err
    assert gateway.image() == OLD_IMAGE

    ask(opsctl_rollout, gateway, "resume")
    assert gateway.image() == NEW_IMAGE

    assert ask(opsctl_rollout, gateway, "undo")["phase"] == "undone"
    assert gateway.image() == OLD_IMAGE
    reverted = gateway.deployment()
    assert reverted is not None
    assert reverted["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}

    (entry,) = ask(opsctl_rollout, gateway, "history")
    assert entry["phase"] == "undone"
    assert entry["image"] == NEW_IMAGE


def test_abort_rolls_the_canary_back(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, lab: MetricsLab
) -> None:
    with killed_on_exit(background_start(gateway, lab)) as driver:
        assert ask(opsctl_rollout, gateway, "abort")["phase"] == "aborted"
        code, _, err = finish(driver)
    assert code == ExitCode.FAILED, err
    assert gateway.deployment("im-gateway-gateway-canary") is None
    assert gateway.pods("im.platform/track=canary") == []
    assert gateway.image() == OLD_IMAGE
    status = opsctl_rollout("rollout", "status", *common(gateway))
    assert status.exit_code == ExitCode.FAILED
    assert json.loads(status.stdout)["phase"] == "aborted"
    again = opsctl_rollout("rollout", "abort", *common(gateway))
    assert again.exit_code == ExitCode.BAD_INPUT  # nothing left to abort


def test_killed_driver_is_resumed_where_it_stopped(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, lab: MetricsLab
) -> None:
    driver = background_start(gateway, lab)
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=30)
    report = ask(opsctl_rollout, gateway, "status")
    assert report["phase"] == "running"
    assert report["driverAlive"] is False
    assert report["regions"][0]["phase"] == "canary"
    canary = gateway.deployment("im-gateway-gateway-canary")
    assert canary is not None
    assert canary["spec"]["replicas"] == 1

    final = ask(opsctl_rollout, gateway, "resume")
    assert final["phase"] == "succeeded"
    assert final["id"] == report["id"]  # the same rollout, continued
    assert gateway.image() == NEW_IMAGE
    assert gateway.deployment("im-gateway-gateway-canary") is None
