"""Collect one region's health from its Kubernetes API and its Prometheus.

Each source is read on its own with short timeouts; a source that cannot be reached is
reported in the row, never raised, so one dark region does not hide the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from opsctl.alerts._slo import slis
from opsctl.prometheus import Prometheus, PrometheusUnreachable
from opsctl.spec import Region, StackSpec
from opsctl.stack import _names as n

TIMEOUT_S = 3.0
PLATFORM_NAMESPACE_PREFIX = "im"

CASSANDRA_JOB = 'job="cassandra"'


def _matchers(region: str | None, *given: str) -> str:
    parts = [*given, *([f'region="{region}"'] if region else [])]
    return "{" + ",".join(parts) + "}" if parts else ""


def queries(region: str | None = None) -> dict[str, str]:
    """The per-region queries; ``region``: one Prometheus scrapes every region (the local
    multi-region stack labels every target with ``region``), so select that region's series."""

    def m(*given: str) -> str:
        return _matchers(region, *given)

    return {
        "connections": f"sum(im_gateway_connections_active{m()})",
        "messages_per_s": f"sum(rate(im_gateway_messages_accepted_total{m()}[5m]))",
        "delivery_p99_s": "histogram_quantile(0.99, sum by (le) "
        f"(rate(im_gateway_delivery_latency_seconds_bucket{m()}[5m])))",
        "kafka_lag": f"sum(im_dispatcher_consumer_lag{m()})",
        "cassandra_up": f"min(up{m(CASSANDRA_JOB)})",
        "redis_up": f"min(redis_up{m()})",
    }


QUERIES = queries()


def multi_region_queries(region: str) -> dict[str, str]:
    """What a region of a multi-region stack adds (docs/multi-region.md 8). Replication lag:
    the age, when scraped, of the newest beacon from a peer at this region's relay (it grows
    while no beacon arrives). Conflicts: the conflict prober's counter (it runs in every
    relay), summed over every region: any conflict anywhere is everybody's."""
    return {
        "replication_lag_s": f'max(im_relay_replication_lag_seconds{{target="{region}"}})',
        "conflicts": "sum(im_prober_conflicts_total)",
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
    # Multi-region stacks only: the share of the 4096 shards homed here (from the shard map).
    home_share: float | None = None
    shard_map_error: str | None = None

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
            "homeShare": self.home_share,
            "shardMapError": self.shard_map_error,
        }


class KubeProxyTransport(httpx.BaseTransport):
    """Sends httpx requests through a Kubernetes ``ApiClient`` (its auth, TLS and host).

    With it, the one Prometheus client reaches a region's in-cluster Prometheus through the
    API server's service proxy, without a port-forward.
    """

    def __init__(self, api_client: Any, *, timeout: float = TIMEOUT_S) -> None:
        self._api = api_client
        self._timeout = timeout
        # The API server may sit under a path prefix; the client adds it back to every path.
        self._prefix = httpx.URL(api_client.configuration.host).path.rstrip("/")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(self._prefix)
        try:
            method, url, headers, _, _ = self._api.param_serialize(
                request.method,
                path,
                query_params=list(request.url.params.multi_items()),
                auth_settings=["BearerToken"],
            )
            answer = self._api.call_api(
                method, url, header_params=headers, _request_timeout=self._timeout
            )
            content = answer.read()
        except Exception as exc:  # the REST layer's ApiException, urllib3's errors
            raise httpx.TransportError(f"{type(exc).__name__}: {exc}", request=request) from exc
        return httpx.Response(answer.status, content=content, request=request)


def http_prometheus(prometheus_url: str) -> Prometheus:
    return Prometheus(prometheus_url, timeout=TIMEOUT_S)


def proxy_prometheus(api_client: Any) -> Prometheus:
    """The region's in-cluster Prometheus (``n.PROMETHEUS_SERVICE``) via the API server."""
    url = api_client.configuration.host.rstrip("/") + n.prometheus_proxy_path()
    return Prometheus(url, timeout=TIMEOUT_S, transport=KubeProxyTransport(api_client))


def collect_prometheus(
    status: RegionStatus, spec: StackSpec, prometheus: Prometheus, *, shared: bool = False
) -> None:
    """``shared``: this Prometheus scrapes every region (select this region's series)."""
    try:
        with prometheus:
            for key, expr in queries(status.region if shared else None).items():
                status.values[key] = prometheus.scalar(expr)
            if len(spec.regions) > 1:
                for key, expr in multi_region_queries(status.region).items():
                    status.values[key] = prometheus.scalar(expr)
            for sli in slis(spec.slos):
                budget = 1 - sli.objective
                ratio = prometheus.scalar(f'max(im:slo_errors:ratio_rate1h{{slo="{sli.name}"}})')
                status.slo_burn[sli.name] = None if ratio is None else round(ratio / budget, 2)
            alerts = prometheus.query('ALERTS{alertstate="firing"}')
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
    # The row names its source already; the client's reason leaves out the URL.
    shown = exc.reason if isinstance(exc, PrometheusUnreachable) else str(exc)
    text = shown.strip().splitlines()[0] if shown.strip() else ""
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
    shared_prometheus_url: str | None = None,
) -> RegionStatus:
    """``shared_prometheus_url``: one Prometheus of every region (the local multi-region
    stack's), used when the region has none of its own."""
    status = RegionStatus(region.name, region.role)
    api_client = None
    try:
        api_client = kube_client(kubeconfig, region.kube_context)
    except Exception as exc:  # a context missing from the kubeconfig, a broken kubeconfig
        status.kube_error = _reason(exc)
    if api_client is not None:
        collect_kube(status, api_client)
    if prometheus_url:
        collect_prometheus(status, spec, http_prometheus(prometheus_url))
    elif shared_prometheus_url:
        collect_prometheus(status, spec, http_prometheus(shared_prometheus_url), shared=True)
    elif api_client is not None:
        collect_prometheus(status, spec, proxy_prometheus(api_client))
    else:
        status.prometheus_error = "unreachable: no kube context and no --prometheus-url"
    if api_client is not None:
        api_client.close()
    return status
