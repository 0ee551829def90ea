"""opsctl status: one row per region, from the real Kubernetes API and Prometheus."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from opsctl.cluster.pytest_plugin import KubeCluster
from opsctl.errors import ExitCode, UserInputError
from opsctl.loadtest.targets import free_port
from opsctl.local import LocalStack
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack
from opsctl.stack import _names as n
from opsctl.status import QUERIES, RegionStatus, parse_prometheus_urls
from opsctl.status._collect import collect_prometheus, proxy_prometheus
from tests.support import OpsctlRunner, wait_for


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
    opsctl: OpsctlRunner,
    kube_cluster: KubeCluster,
    local_stack: LocalStack,
    platform_namespace: str,
) -> None:
    args = (
        *("status", "--stack", "local", "--kubeconfig", str(kube_cluster.kubeconfig)),
        *("--prometheus-url", local_stack.info.prometheus_url),
    )

    def both_ready() -> dict[str, Any] | None:
        result = opsctl(*args, "-o", "json")
        assert result.exit_code == ExitCode.OK, result.stderr
        (row,) = json.loads(result.stdout)
        return row if row["workloads"]["ready"] == row["workloads"]["desired"] == 2 else None

    row = wait_for("both replicas ready in the status row", both_ready, timeout=60, interval=2)
    assert row["kubeError"] is None
    assert row["prometheusError"] is None
    assert row["connections"] is not None
    assert set(row["sloBurn"]) == {"availability", "delivery-latency", "connect-success"}
    table = opsctl(*args)
    assert "local" in table.stdout


class _FakeApiServer(ThreadingHTTPServer):
    """An API server whose service proxy answers Prometheus queries, recording each request."""

    def __init__(self, status: int, body: object) -> None:
        self.answer = (status, json.dumps(body).encode())
        self.seen: list[tuple[str, str | None]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _FakeApiServer

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        status, body = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def _api_server(status: int, body: object) -> Iterator[_FakeApiServer]:
    server = _FakeApiServer(status, body)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _api_client(host: str) -> Any:
    from kubernetes.client import ApiClient, Configuration

    configuration = Configuration(host=host)
    configuration.api_key = {"authorization": "sesame"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return ApiClient(configuration)


@pytest.mark.unit
@pytest.mark.parametrize("prefix", ["", "/k8s/clusters/c-1"])
def test_the_in_cluster_prometheus_is_asked_through_the_api_servers_service_proxy(
    prefix: str,
) -> None:
    vector = [{"metric": {}, "value": [0, "42"]}]
    body = {"status": "success", "data": {"resultType": "vector", "result": vector}}
    spec = load_stack(DEFAULT_INFRA_DIR, "local")
    status = RegionStatus("local", "primary")
    with _api_server(200, body) as server, _api_client(server.url + prefix) as api_client:
        collect_prometheus(status, spec, proxy_prometheus(api_client))
    assert status.prometheus_error is None
    assert status.values["connections"] == 42
    assert status.slo_burn
    path, authorization = server.seen[0]
    query = urlencode({"query": QUERIES["connections"]})
    assert path == f"{prefix}{n.prometheus_proxy_path()}/api/v1/query?{query}"
    assert authorization == "Bearer sesame"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("status_code", "body", "words"),
    [
        (503, {"kind": "Status", "message": "no endpoints available"}, "answered 503"),
        (400, {"status": "error", "error": "parse error"}, "parse error"),
    ],
)
def test_a_failing_proxy_is_a_reason_in_the_row(status_code: int, body: object, words: str) -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, "local")
    status = RegionStatus("local", "primary")
    with _api_server(status_code, body) as server, _api_client(server.url) as api_client:
        collect_prometheus(status, spec, proxy_prometheus(api_client))
    assert status.prometheus_error is not None
    assert status.prometheus_error.startswith("unreachable: ")
    assert words in status.prometheus_error


@pytest.mark.unit
def test_an_api_server_that_is_down_is_a_reason_in_the_row() -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, "local")
    status = RegionStatus("local", "primary")
    with _api_client(f"http://127.0.0.1:{free_port()}") as api_client:
        collect_prometheus(status, spec, proxy_prometheus(api_client))
    assert status.prometheus_error is not None
    assert status.prometheus_error.startswith("unreachable: ")
