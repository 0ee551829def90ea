"""Per-pod resources of every workload, by sizing class, and the totals quotas are built from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from opsctl.spec import Region, parse_storage
from opsctl.stack._k8s import resources
from opsctl.stack._names import small

# (cpu request, memory request, cpu limit, memory limit) per pod, small / large class.
_PROFILES: dict[str, tuple[tuple[str, str, str, str], tuple[str, str, str, str]]] = {
    "gateway": (("100m", "256Mi", "1", "512Mi"), ("2", "4Gi", "4", "6Gi")),
    "dispatcher": (("100m", "256Mi", "1", "512Mi"), ("500m", "1Gi", "2", "2Gi")),
    "relay": (("100m", "256Mi", "1", "512Mi"), ("500m", "1Gi", "2", "2Gi")),
    "kafka-broker": (("250m", "1Gi", "1", "1Gi"), ("4", "16Gi", "8", "16Gi")),
    "kafka-controller": (("100m", "512Mi", "500m", "512Mi"), ("1", "4Gi", "2", "4Gi")),
    "kafka-entity-operator": (("50m", "256Mi", "500m", "256Mi"), ("200m", "512Mi", "1", "512Mi")),
    "mirror-maker": (("100m", "512Mi", "1", "512Mi"), ("1", "2Gi", "2", "2Gi")),
    "cassandra": (("250m", "2Gi", "1", "2Gi"), ("4", "32Gi", "8", "32Gi")),
    "redis": (("50m", "128Mi", "500m", "256Mi"), ("1", "8Gi", "2", "8Gi")),
    "redis-exporter": (("10m", "32Mi", "100m", "64Mi"), ("50m", "64Mi", "200m", "128Mi")),
    "job": (("100m", "256Mi", "500m", "512Mi"), ("200m", "512Mi", "1", "1Gi")),
}
# Defaults a LimitRange gives containers that set nothing (operator-made sidecars).
DEFAULT_CONTAINER = ("50m", "64Mi", "500m", "512Mi")


def profile(name: str, region: Region) -> dict[str, Any]:
    chosen = _PROFILES[name][0 if small(region) else 1]
    return resources(*chosen)


def _millis(cpu: str) -> int:
    return int(cpu[:-1]) if cpu.endswith("m") else int(float(cpu) * 1000)


@dataclass
class Totals:
    pods: int = 0
    cpu_millis: int = 0
    memory_bytes: int = 0
    cpu_limit_millis: int = 0
    memory_limit_bytes: int = 0

    def add(self, name: str, region: Region, count: int) -> None:
        cpu, memory, cpu_limit, memory_limit = _PROFILES[name][0 if small(region) else 1]
        self.pods += count
        self.cpu_millis += count * _millis(cpu)
        self.memory_bytes += count * parse_storage(memory)
        self.cpu_limit_millis += count * _millis(cpu_limit)
        self.memory_limit_bytes += count * parse_storage(memory_limit)

    def with_headroom(self, factor: float = 1.25, extra_pods: int = 4) -> Totals:
        return Totals(
            pods=math.ceil(self.pods * factor) + extra_pods,
            cpu_millis=math.ceil(self.cpu_millis * factor),
            memory_bytes=math.ceil(self.memory_bytes * factor),
            cpu_limit_millis=math.ceil(self.cpu_limit_millis * factor),
            memory_limit_bytes=math.ceil(self.memory_limit_bytes * factor),
        )


def kafka_controller_count(region: Region) -> int:
    """Dedicated KRaft controllers from 3 brokers up; smaller clusters run dual-role nodes."""
    return 3 if region.kafka.brokers >= 3 else 0


def redis_pod_count(region: Region) -> int:
    return region.redis.shards * (1 + region.redis.replicas_per_shard)


def redis_storage(region: Region) -> str:
    return "1Gi" if small(region) else "20Gi"


def mirror_maker_replicas(region: Region) -> int:
    return 1 if small(region) else 2


def relay_replicas(region: Region) -> int:
    """Relays per region of a multi-region stack: two in a large region, so losing a pod
    does not stop live delivery from the peers; one in a small region."""
    return 1 if small(region) else 2


def app_totals(region: Region, *, relay: bool = True) -> Totals:
    totals = Totals()
    # A rollout's surge on top of the ceiling (25%: more than the chart derives from the
    # reconnect budget for the shipped stacks, one pod), plus the helm test pod.
    totals.add("gateway", region, math.ceil(region.gateway.max_replicas * 1.25))
    totals.add("dispatcher", region, math.ceil(region.dispatcher.max_replicas * 1.25))
    if relay:
        # One surge pod during a rollout (maxSurge 1).
        totals.add("relay", region, relay_replicas(region) + 1)
    totals.add("job", region, 1)
    return totals.with_headroom()


def data_totals(region: Region) -> Totals:
    totals = Totals()
    totals.add("kafka-broker", region, region.kafka.brokers)
    totals.add("kafka-controller", region, kafka_controller_count(region))
    totals.add("kafka-entity-operator", region, 2)
    totals.add("mirror-maker", region, mirror_maker_replicas(region))
    totals.add("cassandra", region, region.cassandra.nodes)
    totals.add("redis", region, redis_pod_count(region))
    totals.add("redis-exporter", region, redis_pod_count(region))
    totals.add("job", region, 2)
    return totals.with_headroom()
