"""The exporters on the real local stack: every metric the Kafka, Cassandra and Redis rules use
is in the local Prometheus under exactly that name, with the labels the rules select on."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from opsctl.alerts._metrics import rule_metrics
from opsctl.alerts._rules import load_sources
from opsctl.local import LocalStack
from opsctl.poll import WaitTimeout, wait_until
from tests.support import wait_for

pytestmark = pytest.mark.integration

EXPORTER_RULE_FILES = ("kafka.yaml", "cassandra.yaml", "redis.yaml")
# What the rules must keep using; guards the scanner as much as the stack.
EXPECTED = {
    "kafka_controller_kafkacontroller_offlinepartitionscount",
    "kafka_controller_kafkacontroller_activecontrollercount",
    "kafka_server_replicamanager_underreplicatedpartitions",
    "cassandra_failuredetector_downendpointcount",
    "cassandra_droppedmessage_dropped_total",
    "cassandra_compaction_pendingtasks",
    "cassandra_clientrequest_latency_seconds",
    "cassandra_storage_totalhints_total",
    "redis_up",
    "redis_memory_used_bytes",
    "redis_memory_max_bytes",
    "redis_evicted_keys_total",
    "redis_rejected_connections_total",
    "redis_master_link_up",
}


def _exporter_metrics_in_rules() -> set[str]:
    names: set[str] = set()
    for entry in rule_metrics(load_sources()):
        if entry.file in EXPORTER_RULE_FILES:
            names |= entry.metrics
    # up{job=...} is Prometheus' own; im_dispatcher_* comes from the dispatcher.
    return {name for name in names if name != "up" and not name.startswith("im_")}


def _series(prometheus: str, match: str) -> list[dict[str, str]]:
    response = httpx.get(f"{prometheus}/api/v1/series", params={"match[]": match}, timeout=10)
    response.raise_for_status()
    data: list[dict[str, str]] = response.json()["data"]
    return data


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def test_every_exporter_metric_the_rules_use_is_in_prometheus(local_stack: LocalStack) -> None:
    wanted = _exporter_metrics_in_rules()
    assert wanted == EXPECTED
    prometheus = local_stack.info.prometheus_url

    def missing() -> set[str]:
        response = httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=10)
        return wanted - set(response.json()["data"])

    # Scrapes run every 2 s; the JVM agents answer from the first second of the JVM.
    try:
        wait_until("every exporter metric", lambda: not missing(), timeout=60, interval=1)
    except WaitTimeout:
        pytest.fail(f"not exposed by the live local stack: {sorted(missing())}")


def test_the_selectors_the_rules_use_match_series(local_stack: LocalStack) -> None:
    prometheus = local_stack.info.prometheus_url
    selectors = {
        'cassandra_droppedmessage_dropped_total{scope="MUTATION", job="cassandra"}': 1,
        'cassandra_clientrequest_latency_seconds{scope=~"Read|Write", quantile="0.99"}': 2,
        'kafka_controller_kafkacontroller_activecontrollercount{job="kafka"}': 1,
        'redis_up{job="redis"}': 2,
        'redis_master_link_up{job="redis", role="replica"}': 1,
    }
    for selector, count in selectors.items():
        wait_for(
            selector,
            lambda s=selector, n=count: len(_series(prometheus, s)) == n,  # type: ignore[misc]
            timeout=60,
            interval=1,
        )


def test_exporter_values_are_true_to_the_stack(local_stack: LocalStack) -> None:
    prometheus = local_stack.info.prometheus_url

    def value(expr: str) -> dict[str, float]:
        return {
            item["metric"].get("role", item["metric"].get("job", "")): float(item["value"][1])
            for item in _query(prometheus, expr)
        }

    maxmemory = 256 * 1024 * 1024
    settled = {
        "redis_memory_max_bytes": {"primary": maxmemory, "replica": maxmemory},
        "redis_master_link_up": {"replica": 1.0},
        "redis_up": {"primary": 1.0, "replica": 1.0},
        "kafka_controller_kafkacontroller_activecontrollercount": {"kafka": 1.0},
    }
    for expr, expected in settled.items():
        wait_for(
            f"{expr} == {expected}",
            lambda e=expr, x=expected: value(e) == x,  # type: ignore[misc]
            timeout=30,
            interval=1,
        )
    offline = value("kafka_controller_kafkacontroller_offlinepartitionscount")
    assert offline == {"kafka": 0.0}
    assert value("cassandra_failuredetector_downendpointcount") == {"cassandra": 0.0}
    latencies = _query(prometheus, 'cassandra_clientrequest_latency_seconds{quantile="0.99"}')
    # Seconds, not microseconds: a local p99 is far below a minute.
    assert all(0 <= float(item["value"][1]) < 60 for item in latencies), latencies


def test_every_exporter_target_is_up(local_stack: LocalStack) -> None:
    url = f"{local_stack.info.prometheus_url}/api/v1/targets"

    def healthy() -> bool:
        targets = httpx.get(url, timeout=5).json()["data"]["activeTargets"]
        up = [t["labels"]["job"] for t in targets if t["health"] == "up"]
        return up.count("kafka") == 1 and up.count("cassandra") == 1 and up.count("redis") == 2

    wait_for("the kafka, cassandra and two redis targets to be up", healthy, timeout=30, interval=1)
    for job, urls in local_stack.info.metrics_urls.items():
        for metrics_url in urls:
            response = httpx.get(metrics_url, timeout=10)
            assert response.status_code == 200, (job, metrics_url)
            assert "jvm_memory_used_bytes" in response.text or job == "redis"


def test_the_replica_follows_the_primary(local_stack: LocalStack) -> None:
    assert local_stack.info.redis_replica_url is not None
    primary = redis.Redis.from_url(local_stack.info.redis_url, **local_stack.redis_kwargs())
    replica = redis.Redis.from_url(local_stack.info.redis_replica_url, **local_stack.redis_kwargs())
    primary.set("opsctl-replica-test", "copied")
    wait_for(
        "the replica to copy",
        lambda: replica.get("opsctl-replica-test") == b"copied",
        timeout=10,
        interval=1,
    )
    assert replica.info("replication")["role"] == "slave"
    assert primary.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
