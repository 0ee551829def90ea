"""Canary rollouts on the real control plane (kwok) with a real Prometheus."""

from __future__ import annotations

import json

import pytest

from opsctl.errors import ExitCode
from tests.opsctl.rollout.conftest import Gateway
from tests.opsctl.rollout.harness import LAB_TIMINGS, NEW_IMAGE, OLD_IMAGE, MetricsLab, flags
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration


def start_args(gateway: Gateway, prometheus: str, **overrides: str) -> list[str]:
    values = {"image": NEW_IMAGE, "prometheus": prometheus, **LAB_TIMINGS, "output": "json"}
    return ["rollout", "start", *gateway.target(), *flags(**{**values, **overrides})]


def test_canary_promotes_a_healthy_release(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, lab: MetricsLab
) -> None:
    result = opsctl_rollout(*start_args(gateway, lab.url))
    assert result.exit_code == ExitCode.OK, result.stderr
    report = json.loads(result.stdout)
    assert report["phase"] == "succeeded"
    (region,) = report["regions"]
    assert region["phase"] == "done"
    assert region["previousImage"] == OLD_IMAGE
    assert gateway.image() == NEW_IMAGE
    assert gateway.deployment(f"{gateway.deployment()['metadata']['name']}-canary") is None
    last = region["lastAnalysis"]
    assert last["verdict"] == "pass"
    assert last["kind"] == "slo"
    print(result.stderr)


def region_state(gateway: Gateway) -> dict[str, object]:
    configmap = gateway.configmap()
    assert configmap is not None
    return {key: json.loads(value) for key, value in configmap["data"].items()}


def test_breaching_canary_rolls_back_and_leaves_stable_intact(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, lab: MetricsLab
) -> None:
    from tests.opsctl.rollout.harness import BREACHING, CANARY_POD

    lab.set(CANARY_POD, BREACHING)
    before = gateway.deployment()
    assert before is not None
    result = opsctl_rollout(*start_args(gateway, lab.url))
    assert result.exit_code == ExitCode.FAILED, result.stderr
    assert "rolled_back" in result.stderr
    report = json.loads(result.stdout)
    (region,) = report["regions"]
    assert report["phase"] == "rolled_back"
    assert region["phase"] == "rolled_back"
    failed = {s["name"]: s for s in region["lastAnalysis"]["signals"] if s["verdict"] == "fail"}
    assert {"delivery_p99_ms", "send_error_ratio"} <= set(failed)
    assert failed["delivery_p99_ms"]["canary"] > 250  # the spec's SLO, from a real query
    assert failed["send_error_ratio"]["stable"] == pytest.approx(0.0)
    # Stable untouched: same template generation and image; canary and its pods gone.
    after = gateway.deployment()
    assert after is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert gateway.image() == OLD_IMAGE
    assert gateway.deployment("im-gateway-gateway-canary") is None
    assert gateway.pods("im.platform/track=canary") == []
    state = region_state(gateway)
    events = [e["message"] for e in state["region.json"]["events"]]  # type: ignore[index]
    assert "rollback complete" in events


def test_low_traffic_is_inconclusive_pauses_then_resumes(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, lab: MetricsLab
) -> None:
    from tests.opsctl.rollout.harness import CANARY_POD, HEALTHY, QUIET

    lab.set(CANARY_POD, QUIET)
    result = opsctl_rollout(*start_args(gateway, lab.url))
    assert result.exit_code == ExitCode.INCONCLUSIVE, result.stderr
    report = json.loads(result.stdout)
    assert report["phase"] == "paused"
    assert "fewer than 20" in report["reason"]
    (region,) = report["regions"]
    assert region["phase"] == "canary"
    assert region["canaryReplicas"] == 2
    assert gateway.image() == OLD_IMAGE  # nothing promoted while in doubt
    common = ["--namespace", gateway.namespace, "--kubeconfig", str(gateway.cluster.kubeconfig)]
    status = opsctl_rollout("rollout", "status", "--stack", "local", *common, "-o", "json")
    assert status.exit_code == ExitCode.INCONCLUSIVE
    assert json.loads(status.stdout)["phase"] == "paused"

    lab.set(CANARY_POD, HEALTHY)
    resumed = opsctl_rollout("rollout", "resume", "--stack", "local", *common, "-o", "json")
    assert resumed.exit_code == ExitCode.OK, resumed.stderr
    assert json.loads(resumed.stdout)["phase"] == "succeeded"
    assert gateway.image() == NEW_IMAGE


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"regions": "local,mars"}, "unknown region 'mars'"),
        ({"image": "Registry/UPPER:1"}, "--image"),
        ({"image": "registry.im.internal/im/gateway:latest"}, "latest"),
        ({"steps": "50,25,100"}, "must increase"),
        ({"bake": "2s"}, "shorter than the analysis interval"),
    ],
)
def test_bad_input_exits_2_before_any_change(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, overrides: dict[str, str], message: str
) -> None:
    before = gateway.deployment()
    assert before is not None
    result = opsctl_rollout(*start_args(gateway, "http://127.0.0.1:9", **overrides))
    assert result.exit_code == ExitCode.BAD_INPUT, result.stderr
    assert message in result.stderr
    assert gateway.configmap() is None
    assert gateway.deployment("im-gateway-gateway-canary") is None
    after = gateway.deployment()
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
