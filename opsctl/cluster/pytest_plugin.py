"""pytest fixtures on a real simulated cluster (kube-apiserver + etcd + controllers + kwok).

``tests/conftest.py`` loads it (``pytest_plugins``); conftests need not import its fixtures.

``kube_cluster`` (session) starts the local stack's region cluster once, in a private state
directory so it never touches clusters started with ``opsctl cluster up``, and deletes it at the
end. ``prod_clusters`` (session, only for the tests that ask for it) is one cluster per region
of the prod stack (three), shared by the multi-region rollout and the region operations.
``kube_namespace`` gives each test a fresh namespace, deleted afterwards. Missing binaries
fail the test with the command to run; they never skip it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from opsctl.cluster._plan import ClusterPlan, plan_clusters
from opsctl.cluster._tools import find_tools
from opsctl.errors import ToolMissing
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.poll import wait_until

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, CoreV1Api

    from opsctl.cluster.kwok import KwokClusters

TEST_RUN_LABEL = "opsctl.test/run"
TEST_STACK = "local"


@dataclass(frozen=True)
class KubeCluster:
    """A running simulated cluster for tests."""

    plan: ClusterPlan
    clusters: KwokClusters

    @property
    def context(self) -> str:
        return self.plan.context

    @property
    def kubeconfig(self) -> Path:
        """Merged kubeconfig whose context is the region's kubeContext."""
        return self.clusters.kubeconfig_path

    def api_client(self) -> AbstractContextManager[ApiClient]:
        return self.clusters.api_client(self.plan.name)


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    try:
        tools = find_tools()
    except ToolMissing as missing:
        pytest.fail(f"{missing.message}; {missing.hint or ''}", pytrace=False)
    # Imported here, not at module top: loading this plugin must not cost every pytest run the
    # Kubernetes client import (about a second).
    from opsctl.cluster.kwok import KwokClusters

    plan = plan_clusters(DEFAULT_INFRA_DIR, TEST_STACK)[0]
    clusters = KwokClusters(tmp_path_factory.mktemp("kwok"), tools=tools)
    try:
        clusters.up([plan])
        yield KubeCluster(plan=plan, clusters=clusters)
    finally:
        clusters.down()


@pytest.fixture(scope="session")
def prod_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KwokClusters]:
    try:
        tools = find_tools()
    except ToolMissing as missing:
        pytest.fail(f"{missing.message}; {missing.hint or ''}", pytrace=False)
    from opsctl.cluster.kwok import KwokClusters

    clusters = KwokClusters(tmp_path_factory.mktemp("kwok-prod"), tools=tools)
    try:
        clusters.up(plan_clusters(DEFAULT_INFRA_DIR, "prod"), nodes_per_zone=1)
        yield clusters
    finally:
        clusters.down()


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace labelled ``opsctl.test/run=<id>``, deleted after the test."""
    from kubernetes.client import CoreV1Api, V1Namespace, V1ObjectMeta

    run_id = uuid.uuid4().hex[:8]
    name = f"t-{run_id}"
    test_name = request.node.name[:63].strip("-_.") or "test"
    labels = {TEST_RUN_LABEL: run_id, "opsctl.test/name": _label_value(test_name)}
    with kube_cluster.api_client() as api_client:
        core = CoreV1Api(api_client)
        core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=name, labels=labels)))
        try:
            _wait_for_default_service_account(core, name)
            yield name
        finally:
            core.delete_namespace(name, propagation_policy="Background")


def _wait_for_default_service_account(core: CoreV1Api, namespace: str) -> None:
    """Admission rejects pods until the controller-manager creates the namespace's 'default'."""
    from kubernetes.client.exceptions import ApiException

    def exists() -> bool:
        try:
            core.read_namespaced_service_account("default", namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return False
        return True

    wait_until(f"the default service account in {namespace}", exists, timeout=30.0, interval=0.1)


def _label_value(text: str) -> str:
    cleaned = "".join(char if char.isalnum() or char in "-_." else "-" for char in text)
    return cleaned[:63].strip("-_.") or "test"
