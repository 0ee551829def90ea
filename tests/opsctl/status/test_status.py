"""opsctl status: one row per region, from the real Kubernetes API and Prometheus."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsctl.cluster.pytest_plugin import KubeCluster
from opsctl.errors import ExitCode, UserInputError
from opsctl.local import LocalStack
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack
from opsctl.status import parse_prometheus_urls
from tests.support import OpsctlRunner


@pytest.mark.unit
def test_unreachable_regions_are_rows_not_failures(opsctl: OpsctlRunner, tmp_path: Path) -> None:
    empty = tmp_path / "kubeconfig"
    empty.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    result = opsctl("status", "--stack", "prod", "--kubeconfig", str(empty), "-o", "json")
    assert result.exit_code == ExitCode.OK, result.stderr
    rows = json.loads(result.stdout)
    assert [row["region"] for row in rows] == ["ap-east", "eu-central", "us-east"]
    for row in rows:
        assert row["kubeError"].startswith("unreachable")
        assert row["prometheusError"].startswith("unreachable")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("values", "words"),
    [
        (["http://p:9090"], "needs REGION=URL"),
        (["mars=http://p:9090"], "'mars' is not a region"),
        (["ap-east=ftp://p"], "is not an http(s) URL"),
    ],
)
def test_bad_prometheus_urls_exit_2(values: list[str], words: str) -> None:
    with pytest.raises(UserInputError, match=re.escape(words)):
        parse_prometheus_urls(values, load_stack(DEFAULT_INFRA_DIR, "prod"))


@pytest.fixture
def platform_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A namespace named like the platform's (status counts im* namespaces only)."""
    from kubernetes.client import AppsV1Api, CoreV1Api

    name = f"im-status-{uuid.uuid4().hex[:6]}"
    with kube_cluster.api_client() as client:
        CoreV1Api(client).create_namespace({"metadata": {"name": name}})
        deployment = {
            "metadata": {"name": "gw"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "gw"}},
                "template": {
                    "metadata": {"labels": {"app": "gw"}},
                    "spec": {
                        "containers": [
                            {"name": "gw", "image": "registry.im.internal/im/gateway:0.1.0"}
                        ]
                    },
                },
            },
        }
        AppsV1Api(client).create_namespaced_deployment(name, deployment)
        try:
            yield name
        finally:
            CoreV1Api(client).delete_namespace(name)


@pytest.mark.integration
def test_local_region_row_from_kwok_and_the_local_prometheus(
    opsctl: OpsctlRunner, kube_cluster: KubeCluster, local_stack: LocalStack,
    platform_namespace: str,
) -> None:  # fmt: skip
    args = ("status", "--stack", "local", "--kubeconfig", str(kube_cluster.kubeconfig),
            "--prometheus-url", local_stack.info.prometheus_url, "-o", "json")  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        result = opsctl(*args)
        assert result.exit_code == ExitCode.OK, result.stderr
        (row,) = json.loads(result.stdout)
        if row["workloads"]["ready"] == row["workloads"]["desired"] == 2:
            break
        assert time.monotonic() < deadline, row
        time.sleep(2)
    assert row["kubeError"] is None
    assert row["prometheusError"] is None
    assert row["connections"] is not None
    assert set(row["sloBurn"]) == {"availability", "delivery-latency", "connect-success"}
    table = opsctl(*args[:-2])
    assert "local" in table.stdout
