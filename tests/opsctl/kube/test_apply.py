"""Alert rules and dashboards are applied server-side to a real (kwok) cluster by region."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from opsctl.cluster.pytest_plugin import KubeCluster
from opsctl.errors import ExitCode
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack
from tests.support import OpsctlRunner, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def monitoring_clean(kube_cluster: KubeCluster) -> Iterator[None]:
    """What opsctl applies to 'monitoring' is gone (not just terminating) before and after."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    def remove() -> None:
        with kube_cluster.api_client() as client:
            core = CoreV1Api(client)
            try:
                core.delete_namespace("monitoring")
            except ApiException as missing:
                if missing.status != 404:
                    raise

            def gone() -> bool:
                try:
                    core.read_namespace("monitoring")
                except ApiException as error:
                    if error.status == 404:
                        return True
                    raise
                return False

            wait_for("namespace monitoring to be deleted", gone, timeout=60, interval=0.5)

    remove()
    yield
    remove()


@pytest.fixture
def local_kubeconfig(kube_cluster: KubeCluster) -> Path:
    return kube_cluster.kubeconfig


def test_dashboards_apply_creates_sidecar_configmaps(
    opsctl: OpsctlRunner, kube_cluster: KubeCluster, local_kubeconfig: Path, monitoring_clean: None
) -> None:
    args = ("dashboards", "apply", "--stack", "local", "--kubeconfig", str(local_kubeconfig))
    dry = opsctl(*args, "--dry-run")
    assert dry.exit_code == ExitCode.OK, dry.stderr
    result = opsctl(*args, "-o", "json")
    assert result.exit_code == ExitCode.OK, result.stderr
    assert len(json.loads(result.stdout)["local"]) == 7  # the namespace and six dashboards
    from kubernetes.client import CoreV1Api

    with kube_cluster.api_client() as client:
        maps = (
            CoreV1Api(client)
            .list_namespaced_config_map("monitoring", label_selector="grafana_dashboard=1")
            .items
        )
    assert sorted(m.metadata.name for m in maps) == sorted(
        f"dashboard-{uid}"
        for uid in (
            "im-slo-overview",
            "im-gateway",
            "im-pipeline",
            "im-cassandra",
            "im-redis",
            "im-loadtest-run",
        )
    )
    again = opsctl(*args)
    assert again.exit_code == ExitCode.OK, again.stderr  # idempotent


def test_alerts_apply_needs_the_crd_then_applies_prometheus_rules(
    opsctl: OpsctlRunner, kube_cluster: KubeCluster, local_kubeconfig: Path, monitoring_clean: None
) -> None:
    from kubernetes.client import CustomObjectsApi

    from opsctl.cluster.crds import install_crds

    args = ("alerts", "apply", "--stack", "local", "--kubeconfig", str(local_kubeconfig))
    with kube_cluster.api_client() as client:
        install_crds(client, ["prometheus-operator"], kinds={"PrometheusRule"})
        result = opsctl(*args)
        assert result.exit_code == ExitCode.OK, result.stderr
        rules = CustomObjectsApi(client).list_namespaced_custom_object(
            "monitoring.coreos.com", "v1", "monitoring", "prometheusrules"
        )["items"]
    dry = opsctl(*args, "--dry-run")
    assert dry.exit_code == ExitCode.OK, dry.stderr
    names = {rule["metadata"]["name"] for rule in rules}
    assert {"im-gateway", "im-kafka", "im-slo"} <= names
    for rule in rules:
        assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_a_region_whose_context_is_missing_fails_before_any_change(
    opsctl: OpsctlRunner, tmp_path: Path
) -> None:
    empty = tmp_path / "kubeconfig"
    empty.write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": []}
        )
    )
    result = opsctl("dashboards", "apply", "--stack", "staging", "--kubeconfig", str(empty))
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "kube context 'kwok-staging-eu-central' is not usable" in result.stderr
    assert (
        load_stack(DEFAULT_INFRA_DIR, "staging").regions[0].kube_context
        == "kwok-staging-eu-central"
    )
