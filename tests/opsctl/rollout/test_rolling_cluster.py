"""`--strategy rolling` and the reconnect budget, on the real control plane (kwok) with a real
Prometheus: the Deployment's own update paced by the budget, analysis gating it, and an abort
when the measured reconnect rate exceeds the budget."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from opsctl.errors import ExitCode
from opsctl.paths import REPO_ROOT
from tests.opsctl.rollout.conftest import Gateway
from tests.opsctl.rollout.harness import (
    BREACHING,
    HEALTHY,
    NEW_IMAGE,
    OLD_IMAGE,
    STABLE_POD,
    DeploymentWatch,
    MetricsLab,
)
from tests.opsctl.rollout.test_canary_cluster import region_state, start_args
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration

ORIGINAL_STRATEGY = {
    "type": "RollingUpdate",
    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
}


def budget_stack(tmp_path: Path, reconnects_per_second: int) -> Path:
    """A copy of the local stack with another reconnect budget (same kwok context)."""
    infra = tmp_path / "infra"
    infra.mkdir()
    shutil.copy(REPO_ROOT / "infra" / "Pulumi.yaml", infra / "Pulumi.yaml")
    text = (REPO_ROOT / "infra" / "Pulumi.local.yaml").read_text()
    changed, count = re.subn(
        r"reconnectsPerSecond: \d+", f"reconnectsPerSecond: {reconnects_per_second}", text
    )
    assert count == 1
    (infra / "Pulumi.local.yaml").write_text(changed)
    return infra


def gateway_pod_images(gateway: Gateway) -> list[str]:
    pods = gateway.pods("app.kubernetes.io/component=gateway")
    return sorted(
        pod["spec"]["containers"][0]["image"]
        for pod in pods
        if not pod["metadata"].get("deletionTimestamp")
    )


def rolling_states(watch: DeploymentWatch) -> list[dict[str, Any]]:
    return [state for state in watch.states if state["strategy"] != ORIGINAL_STRATEGY]


def test_rolling_update_is_paced_by_the_budget_then_restored(
    opsctl_rollout: OpsctlRunner,
    gateway: Gateway,
    lab: MetricsLab,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 12500 reconnects/s; a pod of 10000 connections drains over 0.8 x 2 s = 6250/s: 2 pods.
    monkeypatch.setenv("OPSCTL_INFRA_DIR", str(budget_stack(tmp_path, 12500)))
    with DeploymentWatch(gateway.deployment) as watch:
        result = opsctl_rollout(
            *start_args(gateway, lab.url, strategy="rolling", drain_window="2s")
        )
    assert result.exit_code == ExitCode.OK, result.stderr
    report = json.loads(result.stdout)
    assert report["phase"] == "succeeded"
    assert report["strategy"] == "rolling"
    (region,) = report["regions"]
    assert region["phase"] == "done"
    assert region["canaryReplicas"] == 0
    assert gateway.deployment("im-gateway-gateway-canary") is None  # no canary in this mode

    # Exactly the budget-derived strategy while the image changed, then the original back.
    assert watch.states[0]["strategy"] == ORIGINAL_STRATEGY
    assert watch.states[0]["image"] == OLD_IMAGE
    applied = rolling_states(watch)
    assert applied, watch.states
    for state in applied:
        assert state["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0},
        }
        assert state["minReadySeconds"] == 2
        assert state["image"] == NEW_IMAGE
    final = gateway.deployment()
    assert final is not None
    assert final["spec"]["strategy"] == ORIGINAL_STRATEGY
    assert final["spec"].get("minReadySeconds", 0) == 0
    assert gateway.image() == NEW_IMAGE
    assert gateway_pod_images(gateway) == [NEW_IMAGE] * 4

    # The bake analysed the whole region against the SLOs before declaring it done.
    last = region["lastAnalysis"]
    assert last["kind"] == "slo"
    assert last["verdict"] == "pass"
    assert "maxSurge 2" in result.stderr


def test_breaching_rolling_release_reverts_to_the_previous_template(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, lab: MetricsLab
) -> None:
    before = gateway.deployment()
    assert before is not None

    def new_version_breaches(state: dict[str, Any]) -> None:
        if state["image"] == NEW_IMAGE:
            lab.set(STABLE_POD, BREACHING)  # the new pods' metrics, from now on

    with DeploymentWatch(gateway.deployment, on_change=new_version_breaches) as watch:
        result = opsctl_rollout(
            *start_args(gateway, lab.url, strategy="rolling", drain_window="2s")
        )
    assert result.exit_code == ExitCode.FAILED, result.stderr
    report = json.loads(result.stdout)
    assert report["phase"] == "rolled_back"
    (region,) = report["regions"]
    assert region["phase"] == "rolled_back"
    failed = {s["name"] for s in region["lastAnalysis"]["signals"] if s["verdict"] == "fail"}
    assert {"delivery_p99_ms", "send_error_ratio"} <= failed
    assert region["lastAnalysis"]["kind"] == "slo"

    # Local budget 200/s against 10000-connection pods: one pod at a time.
    applied = rolling_states(watch)
    assert applied, watch.states
    assert applied[0]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert applied[0]["minReadySeconds"] == 2
    # Reverted exactly: the same pod template, strategy and minReadySeconds as before.
    after = gateway.deployment()
    assert after is not None
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["spec"]["strategy"] == before["spec"]["strategy"]
    assert after["spec"].get("minReadySeconds", 0) == before["spec"].get("minReadySeconds", 0)
    assert gateway_pod_images(gateway) == [OLD_IMAGE] * 4
    events = [e["message"] for e in region_state(gateway)["region.json"]["events"]]  # type: ignore[index]
    assert "rollback complete" in events


def test_reconnects_over_the_budget_abort_and_revert(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, lab: MetricsLab
) -> None:
    before = gateway.deployment()
    assert before is not None

    def promotion_storms(state: dict[str, Any]) -> None:
        if state["image"] == NEW_IMAGE:  # the canary passed; promotion drains old pods
            lab.set(STABLE_POD, {**HEALTHY, "drain_disconnect_rps": 600.0})

    with DeploymentWatch(gateway.deployment, on_change=promotion_storms):
        result = opsctl_rollout(*start_args(gateway, lab.url, drain_window="2s"))
    assert result.exit_code == ExitCode.FAILED, result.stderr
    report = json.loads(result.stdout)
    assert report["phase"] == "aborted"
    message = re.search(
        r"measured reconnect rate ([0-9.]+)/s exceeds the reconnect budget of 200/s",
        result.stderr,
    )
    assert message, result.stderr
    assert float(message.group(1)) > 200
    assert report["reason"].startswith("local: measured reconnect rate")
    (region,) = report["regions"]
    assert region["phase"] == "aborted"
    events = region_state(gateway)["region.json"]["events"]  # type: ignore[index]
    exceeded = [e for e in events if e["message"] == "reconnect budget exceeded"]
    assert exceeded
    assert exceeded[0]["rate"] > 200
    # Rolled back: previous template and strategy, old pods, no canary.
    after = gateway.deployment()
    assert after is not None
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["spec"]["strategy"] == before["spec"]["strategy"]
    assert gateway_pod_images(gateway) == [OLD_IMAGE] * 4
    assert gateway.deployment("im-gateway-gateway-canary") is None
