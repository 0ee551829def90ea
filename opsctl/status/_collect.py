"""Collect one region's health from its Kubernetes API and its Prometheus.

Each source is read on its own with short timeouts; a source that cannot be reached is
reported in the row, never raised, so one dark region does not hide the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from opsctl.alerts._slo import slis
from opsctl.spec import Region, StackSpec

TIMEOUT_S = 3.0
PLATFORM_NAMESPACE_PREFIX = "im"
# In-cluster Prometheus, reached through the API server's service proxy.
PROMETHEUS_PROXY = "/api/v1/namespaces/monitoring/services/prometheus-operated:9090/proxy"

QUERIES = {
    "connections": "sum(im_gateway_connections_active)",
    "messages_per_s": "sum(rate(im_gateway_messages_accepted_total[5m]))",
    "delivery_p99_s": "histogram_quantile(0.99, sum by (le) "
    "(rate(im_gateway_delivery_latency_seconds_bucket[5m])))",
    "kafka_lag": "sum(im_dispatcher_consumer_lag)",
    "cassandra_up": 'min(up{job="cassandra"})',
    "redis_up": "min(redis_up)",
}


@dataclass
class RegionStatus:
    region: str
    role: str
    workloads_ready: int | None = None
    workloads_desired: int | None = None
    kube_error: str | None = None
    values: dict[str, float | None] = field(default_factory=dict)
    slo_burn: dict[str, float | None] = field(default_factory=dict)
    firing: list[str] = field(default_factory=list)
    prometheus_error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.kube_error is None or self.prometheus_error is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "role": self.role,
            "workloads": {"ready": self.workloads_ready, "desired": self.workloads_desired},
            "kubeError": self.kube_error,
            "prometheusError": self.prometheus_error,
            **self.values,
            "sloBurn": self.slo_burn,
            "firingAlerts": self.firing,
        }


Query = Callable[[str], list[dict[str, Any]]]


def http_query(prometheus_url: str) -> Query:
    def query(expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=TIMEOUT_S
        )
        answer.raise_for_status()
        return list(answer.json()["data"]["result"])

    return query


def proxy_query(api_client: Any) -> Query:
    """Query the region's in-cluster Prometheus through the API server (no port-forward)."""

    def query(expr: str) -> list[dict[str, Any]]:
        data = api_client.call_api(
            f"{PROMETHEUS_PROXY}/api/v1/query", "GET", query_params=[("query", expr)],
            auth_settings=["BearerToken"], response_type="object", _preload_content=True,
            _request_timeout=TIMEOUT_S,
        )[0]  # fmt: skip
        return list(data["data"]["result"])

    return query


def _scalar(result: list[dict[str, Any]]) -> float | None:
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def collect_prometheus(status: RegionStatus, spec: StackSpec, query: Query) -> None:
    try:
        for key, expr in QUERIES.items():
            status.values[key] = _scalar(query(expr))
        for sli in slis(spec.slos):
            budget = 1 - sli.objective
            ratio = _scalar(query(f'max(im:slo_errors:ratio_rate1h{{slo="{sli.name}"}})'))
            status.slo_burn[sli.name] = None if ratio is None else round(ratio / budget, 2)
        alerts = query('ALERTS{alertstate="firing"}')
        status.firing = sorted({item["metric"].get("alertname", "?") for item in alerts})
    except Exception as exc:  # any transport or protocol failure marks the source unreachable
        status.prometheus_error = _reason(exc)


def collect_kube(status: RegionStatus, api_client: Any) -> None:
    from kubernetes.client import AppsV1Api

    try:
        apps = AppsV1Api(api_client)
        ready = desired = 0
        for listing in (
            apps.list_deployment_for_all_namespaces(_request_timeout=TIMEOUT_S).items,
            apps.list_stateful_set_for_all_namespaces(_request_timeout=TIMEOUT_S).items,
        ):
            for workload in listing:
                namespace = workload.metadata.namespace if workload.metadata else None
                if not (namespace or "").startswith(PLATFORM_NAMESPACE_PREFIX):
                    continue
                desired += (workload.spec.replicas if workload.spec else 0) or 0
                ready += (workload.status.ready_replicas if workload.status else 0) or 0
        status.workloads_ready, status.workloads_desired = ready, desired
    except Exception as exc:  # unreachable API servers, auth failures, timeouts
        status.kube_error = _reason(exc)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"unreachable: {type(exc).__name__}{': ' + text[:120] if text else ''}"


def kube_client(kubeconfig: Path | None, context: str) -> Any:
    from kubernetes import config

    return config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig) if kubeconfig else None, context=context
    )


def region_status(
    spec: StackSpec,
    region: Region,
    *,
    kubeconfig: Path | None,
    prometheus_url: str | None,
) -> RegionStatus:
    status = RegionStatus(region.name, region.role)
    api_client = None
    try:
        api_client = kube_client(kubeconfig, region.kube_context)
    except Exception as exc:  # a context missing from the kubeconfig, a broken kubeconfig
        status.kube_error = _reason(exc)
    if api_client is not None:
        collect_kube(status, api_client)
    if prometheus_url:
        collect_prometheus(status, spec, http_query(prometheus_url))
    elif api_client is not None:
        collect_prometheus(status, spec, proxy_query(api_client))
    else:
        status.prometheus_error = "unreachable: no kube context and no --prometheus-url"
    if api_client is not None:
        api_client.close()
    return status
