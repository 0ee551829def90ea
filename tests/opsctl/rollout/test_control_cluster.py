"""pause, resume, abort, undo, status and history from another process (another machine, as
far as the rollout knows), and a driver killed mid-rollout then resumed."""

from __future__ import annotations

import json
import signal
import subprocess

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


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def test_pause_resume_then_undo(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, lab: MetricsLab
) -> None:
    with killed_on_exit(background_start(gateway, lab)) as driver:
        paused = opsctl_rollout("rollout", "pause", *common(gateway))
        assert paused.exit_code == ExitCode.OK, paused.stderr
        assert json.loads(paused.stdout)["phase"] == "paused"
        code, out, err = finish(driver)
    assert code == ExitCode.INCONCLUSIVE, err
    assert json.loads(out)["phase"] == "paused"
    assert "paused by" in err
    assert gateway.image() == OLD_IMAGE

    resumed = opsctl_rollout("rollout", "resume", *common(gateway))
    assert resumed.exit_code == ExitCode.OK, resumed.stderr
    assert gateway.image() == NEW_IMAGE

    undone = opsctl_rollout("rollout", "undo", *common(gateway))
    assert undone.exit_code == ExitCode.OK, undone.stderr
    assert json.loads(undone.stdout)["phase"] == "undone"
    assert gateway.image() == OLD_IMAGE
    reverted = gateway.deployment()
    assert reverted is not None
    assert reverted["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}

    history = opsctl_rollout("rollout", "history", *common(gateway))
    assert history.exit_code == ExitCode.OK, history.stderr
    (entry,) = json.loads(history.stdout)
    assert entry["phase"] == "undone"
    assert entry["image"] == NEW_IMAGE


def test_abort_rolls_the_canary_back(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, lab: MetricsLab
) -> None:
    with killed_on_exit(background_start(gateway, lab)) as driver:
        aborted = opsctl_rollout("rollout", "abort", *common(gateway))
        assert aborted.exit_code == ExitCode.OK, aborted.stderr
        assert json.loads(aborted.stdout)["phase"] == "aborted"
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
    status = opsctl_rollout("rollout", "status", *common(gateway))
    assert status.exit_code == ExitCode.OK, status.stderr
    report = json.loads(status.stdout)
    assert report["phase"] == "running"
    assert report["driverAlive"] is False
    assert report["regions"][0]["phase"] == "canary"
    canary = gateway.deployment("im-gateway-gateway-canary")
    assert canary is not None
    assert canary["spec"]["replicas"] == 1

    resumed = opsctl_rollout("rollout", "resume", *common(gateway))
    assert resumed.exit_code == ExitCode.OK, resumed.stderr
    final = json.loads(resumed.stdout)
    assert final["phase"] == "succeeded"
    assert final["id"] == report["id"]  # the same rollout, continued
    assert gateway.image() == NEW_IMAGE
    assert gateway.deployment("im-gateway-gateway-canary") is None
