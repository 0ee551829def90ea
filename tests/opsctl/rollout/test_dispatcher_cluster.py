"""`--component dispatcher`: a canary of the chart-shaped dispatcher Deployment, gated on the
dispatcher's own signals (consumer lag, batch failure ratio, canary against stable) and on the
gateways' signals namespace-wide, with a real Prometheus on the real control plane (kwok)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsctl.cluster.pytest_plugin import KubeCluster
from opsctl.errors import ExitCode
from tests.opsctl.rollout.conftest import Gateway, create_ready, deploy_gateway
from tests.opsctl.rollout.harness import (
    CANARY_POD,
    CONSUMING,
    DISPATCHER_CANARY_POD,
    DISPATCHER_DEPLOYMENT,
    DISPATCHER_POD,
    HEALTHY,
    LAGGING,
    NEW_DISPATCHER_IMAGE,
    OLD_DISPATCHER_IMAGE,
    STABLE_POD,
    MetricsLab,
    stable_deployment,
)
from tests.opsctl.rollout.test_canary_cluster import start_args
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration
CANARY = f"{DISPATCHER_DEPLOYMENT}-canary"
STATE = "opsctl-rollout-dispatcher"


@pytest.fixture
def dispatcher(kube_cluster: KubeCluster, kube_namespace: str) -> Gateway:
    """The release's gateway and its dispatcher (2 replicas, labelled as the chart does)."""
    with kube_cluster.api_client() as client:
        deploy_gateway(client, kube_namespace)
        body = stable_deployment(kube_namespace, 2, OLD_DISPATCHER_IMAGE, component="dispatcher")
        create_ready(client, kube_namespace, body)
    return Gateway(kube_cluster, kube_namespace)


@pytest.fixture
def dispatcher_lab(tmp_path: Path, kube_namespace: str) -> Iterator[MetricsLab]:
    pods = {
        CANARY_POD: HEALTHY,
        STABLE_POD: HEALTHY,
        DISPATCHER_POD: CONSUMING,
        DISPATCHER_CANARY_POD: CONSUMING,
    }
    with MetricsLab(tmp_path / "metrics", kube_namespace, pods) as metrics:
        yield metrics


def dispatcher_args(dispatcher: Gateway, lab: MetricsLab) -> list[str]:
    # A bare tag resolves against the spec's dispatcher repository.
    return [*start_args(dispatcher, lab.url, image="0.2.0"), "--component", "dispatcher"]


def test_dispatcher_canary_promotes_on_its_own_signals(
    opsctl_rollout: OpsctlRunner, dispatcher: Gateway, dispatcher_lab: MetricsLab
) -> None:
    gateway_before = dispatcher.deployment()
    assert gateway_before is not None
    result = opsctl_rollout(*dispatcher_args(dispatcher, dispatcher_lab))
    assert result.exit_code == ExitCode.OK, result.stderr
    report = json.loads(result.stdout)
    assert report["phase"] == "succeeded"
    assert report["component"] == "dispatcher"
    assert report["image"] == NEW_DISPATCHER_IMAGE
    assert dispatcher.image(DISPATCHER_DEPLOYMENT) == NEW_DISPATCHER_IMAGE
    assert dispatcher.deployment(CANARY) is None
    # The gateway Deployment is not this rollout's business.
    gateway_after = dispatcher.deployment()
    assert gateway_after is not None
    assert gateway_after["metadata"]["generation"] == gateway_before["metadata"]["generation"]

    configmap = dispatcher.configmap(STATE)
    assert configmap is not None
    analyses = json.loads(configmap["data"]["region.json"])["analyses"]
    canary = next(a for a in analyses if a["kind"] == "canary")
    signals = {s["name"]: s for s in canary["signals"]}
    # Own signals compare canary with stable, from real queries on the dispatcher pods.
    assert signals["consumer_lag"]["canary"] == pytest.approx(12.0)
    assert signals["consumer_lag"]["stable"] == pytest.approx(12.0)
    assert signals["batch_failure_ratio"]["canary"] == pytest.approx(0.0)
    assert signals["batch_failure_ratio"]["stable"] == pytest.approx(0.0)
    assert signals["batch_failure_ratio"]["canary_samples"] >= 20
    # The gateways' signals are judged namespace-wide against the SLOs only.
    assert signals["delivery_p99_ms"]["stable"] is None
    assert signals["delivery_p99_ms"]["verdict"] == "pass"
    assert {s["verdict"] for s in canary["signals"]} == {"pass"}


def test_lagging_dispatcher_canary_rolls_back(
    opsctl_rollout: OpsctlRunner, dispatcher: Gateway, dispatcher_lab: MetricsLab
) -> None:
    dispatcher_lab.set(DISPATCHER_CANARY_POD, LAGGING)
    before = dispatcher.deployment(DISPATCHER_DEPLOYMENT)
    assert before is not None
    result = opsctl_rollout(*dispatcher_args(dispatcher, dispatcher_lab))
    assert result.exit_code == ExitCode.FAILED, result.stderr
    report = json.loads(result.stdout)
    assert report["phase"] == "rolled_back"
    (region,) = report["regions"]
    failed = {s["name"]: s for s in region["lastAnalysis"]["signals"] if s["verdict"] == "fail"}
    assert set(failed) == {"consumer_lag", "batch_failure_ratio"}
    assert failed["consumer_lag"]["canary"] == pytest.approx(5000.0)
    assert failed["consumer_lag"]["stable"] == pytest.approx(12.0)
    assert failed["batch_failure_ratio"]["canary"] == pytest.approx(0.2, abs=0.03)
    # The stable dispatcher is untouched; the canary and its pods are gone.
    after = dispatcher.deployment(DISPATCHER_DEPLOYMENT)
    assert after is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert dispatcher.image(DISPATCHER_DEPLOYMENT) == OLD_DISPATCHER_IMAGE
    assert dispatcher.deployment(CANARY) is None
    assert dispatcher.pods("im.platform/track=canary") == []
