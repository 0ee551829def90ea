"""Rollout fixtures: opsctl with the rollout group, a chart-shaped gateway in a fresh namespace
of the real kwok cluster, and a real Prometheus scraping exporters the test controls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
    flags,
    service,
    stable_deployment,
)
from tests.support import OpsctlRunner, wait_for


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

    def _read(self, read: Callable[[Any], Any]) -> dict[str, Any] | None:
        """``read(api_client)`` as a plain dict, or None when the object does not exist."""
        from kubernetes.client.exceptions import ApiException

        with self.cluster.api_client() as client:
            try:
                found = read(client)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return dict(client.sanitize_for_serialization(found))

    def target(self, kubeconfig: Path | None = None) -> list[str]:
        """The flags every rollout command needs to find this gateway."""
        config = kubeconfig or self.cluster.kubeconfig
        return flags(stack="local", namespace=self.namespace, kubeconfig=str(config))

    def deployment(self, name: str = STABLE) -> dict[str, Any] | None:
        return self._read(
            lambda client: AppsV1Api(client).read_namespaced_deployment(name, self.namespace)
        )

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
        return self._read(
            lambda client: CoreV1Api(client).read_namespaced_config_map(name, self.namespace)
        )


def create_ready(client: Any, namespace: str, deployment: dict[str, Any]) -> None:
    """Create the Deployment and wait until every replica it asks for is ready."""
    apps = AppsV1Api(client)
    apps.create_namespaced_deployment(namespace, deployment)
    name, replicas = deployment["metadata"]["name"], deployment["spec"]["replicas"]

    def ready() -> bool:
        found = apps.read_namespaced_deployment(name, namespace)
        return found.status is not None and (found.status.ready_replicas or 0) == replicas

    wait_for(f"deployment {name} to be ready", ready)


def deploy_gateway(client: Any, namespace: str, replicas: int = 4) -> None:
    create_ready(client, namespace, stable_deployment(namespace, replicas))
    CoreV1Api(client).create_namespaced_service(namespace, service(namespace))


@pytest.fixture
def gateway(kube_cluster: KubeCluster, kube_namespace: str) -> Gateway:
    with kube_cluster.api_client() as client:
        deploy_gateway(client, kube_namespace)
    return Gateway(kube_cluster, kube_namespace)


@pytest.fixture
def lab(tmp_path: Path, kube_namespace: str) -> Iterator[MetricsLab]:
    pods = {CANARY_POD: HEALTHY, STABLE_POD: HEALTHY, DISPATCHER_POD: DISPATCHER}
    with MetricsLab(tmp_path / "metrics", kube_namespace, pods) as metrics:
        yield metrics
