"""Rollout fixtures: opsctl with the rollout group, a chart-shaped gateway in a fresh namespace
of the real kwok cluster, and a real Prometheus scraping exporters the test controls."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import AppsV1Api, CoreV1Api

from opsctl.cluster.pytest_plugin import KubeCluster
from tests.opsctl.rollout.cli_main import mounted
from tests.opsctl.rollout.harness import (
    CANARY_POD,
    DISPATCHER,
    DISPATCHER_POD,
    HEALTHY,
    STABLE,
    STABLE_POD,
    MetricsLab,
    service,
    stable_deployment,
    wait_for,
)
from tests.support import OpsctlRunner


@pytest.fixture
def opsctl_rollout(opsctl: OpsctlRunner, monkeypatch: pytest.MonkeyPatch) -> OpsctlRunner:
    from opsctl import cli

    monkeypatch.setattr(cli, "app", mounted())
    return opsctl


@dataclass
class Gateway:
    """The stable gateway Deployment of one test, in the local stack's kwok cluster."""

    cluster: KubeCluster
    namespace: str

    def deployment(self, name: str = STABLE) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        with self.cluster.api_client() as client:
            try:
                found = AppsV1Api(client).read_namespaced_deployment(name, self.namespace)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return dict(client.sanitize_for_serialization(found))

    def image(self, name: str = STABLE) -> str:
        found = self.deployment(name)
        assert found is not None
        return str(found["spec"]["template"]["spec"]["containers"][0]["image"])

    def pods(self, selector: str) -> list[dict[str, Any]]:
        with self.cluster.api_client() as client:
            items = (
                CoreV1Api(client).list_namespaced_pod(self.namespace, label_selector=selector).items
            )
            return [dict(client.sanitize_for_serialization(pod)) for pod in items]

    def configmap(self, name: str = "opsctl-rollout-gateway") -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        with self.cluster.api_client() as client:
            try:
                found = CoreV1Api(client).read_namespaced_config_map(name, self.namespace)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return dict(client.sanitize_for_serialization(found))


def deploy_gateway(client: Any, namespace: str, replicas: int = 4) -> None:
    AppsV1Api(client).create_namespaced_deployment(
        namespace, stable_deployment(namespace, replicas)
    )
    CoreV1Api(client).create_namespaced_service(namespace, service(namespace))

    def ready() -> bool:
        found = AppsV1Api(client).read_namespaced_deployment(STABLE, namespace)
        return (found.status.ready_replicas or 0) == replicas

    wait_for("the stable gateway to be ready", ready)


@pytest.fixture
def gateway(kube_cluster: KubeCluster, kube_namespace: str) -> Gateway:
    with kube_cluster.api_client() as client:
        deploy_gateway(client, kube_namespace)
    return Gateway(kube_cluster, kube_namespace)


@pytest.fixture
def lab(tmp_path: Path, kube_namespace: str) -> Iterator[MetricsLab]:
    metrics = MetricsLab(
        tmp_path / "metrics",
        kube_namespace,
        {CANARY_POD: HEALTHY, STABLE_POD: HEALTHY, DISPATCHER_POD: DISPATCHER},
    )
    try:
        yield metrics.start()
    finally:
        metrics.stop()
