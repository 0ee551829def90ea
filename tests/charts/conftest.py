"""Fixtures for the chart tests: the pinned helm, the session cluster's client, upstream CRDs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kubernetes.client import CoreV1Api

from opsctl.cluster._tools import find_tools
from opsctl.cluster.crds import install_crds
from opsctl.errors import ToolMissing
from tests.charts.helmkit import RESTRICTED, Helm

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from opsctl.cluster.pytest_plugin import KubeCluster


# kwok pods are ready at once and serve nobody, so waiting the derived minReadySeconds (35 s)
# per pod on every install and upgrade tests nothing; the derivation itself is checked on the
# rendered chart (test_im_gateway_strategy.py). A --set in a test still wins over this file.
KWOK_ROLLOUT = Path(__file__).with_name("kwok-rollout-values.yaml")


def _require(error: ToolMissing) -> None:
    pytest.fail(f"{error.message}; {error.hint or ''}", pytrace=False)


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    try:
        return find_tools(("helm",))["helm"]
    except ToolMissing as missing:
        _require(missing)
        raise


@pytest.fixture(scope="session")
def helm(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm for commands that need no cluster (lint, template)."""
    return Helm(helm_binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def cluster_helm(helm: Helm, kube_cluster: KubeCluster) -> Helm:
    """helm bound to the session cluster's kubeconfig and context, deploying with the kwok
    rollout overlay."""
    return Helm(
        helm.binary, helm.home, kube_cluster.kubeconfig, kube_cluster.context, (KWOK_ROLLOUT,)
    )


@pytest.fixture(scope="session")
def kube_api(kube_cluster: KubeCluster) -> Iterator[ApiClient]:
    with kube_cluster.api_client() as api_client:
        yield api_client


@pytest.fixture(scope="session")
def prometheus_operator_crds(kube_api: ApiClient) -> list[str]:
    """The upstream Prometheus Operator CRD the chart uses (ServiceMonitor), installed."""
    try:
        return install_crds(kube_api, ["prometheus-operator"], kinds={"ServiceMonitor"})
    except ToolMissing as missing:
        _require(missing)
        raise


@pytest.fixture
def restricted_namespace(kube_namespace: str, kube_api: ApiClient) -> str:
    """A fresh namespace whose Pod Security admission enforces the `restricted` profile.

    Every pod the chart creates there must pass it, or the API server refuses the pod.
    """
    CoreV1Api(kube_api).patch_namespace(
        kube_namespace, {"metadata": {"labels": {RESTRICTED: "restricted"}}}
    )
    return kube_namespace
