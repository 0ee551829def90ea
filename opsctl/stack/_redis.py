"""Redis per region with the OT-CONTAINER-KIT redis-operator: presence and routing stay regional.

The resource follows the sizing: one shard without replicas is a standalone ``Redis``; one
shard with replicas is a ``RedisReplication``; several shards are a ``RedisCluster`` (Redis
Cluster needs at least three).
"""

from __future__ import annotations

from typing import Any

from opsctl.errors import InputProblem, InvalidInputFile
from opsctl.spec import Region, StackSpec
from opsctl.stack import _names as n
from opsctl.stack._k8s import RESTRICTED_CONTAINER, pvc_template, zone_spread
from opsctl.stack._model import Component, HelmRelease, Manifest
from opsctl.stack._names import redis_kind
from opsctl.stack._sizing import profile, redis_storage
from opsctl.stack._versions import REDIS_EXPORTER_IMAGE, REDIS_IMAGE, REDIS_OPERATOR

API = "redis.redis.opstreelabs.in/v1beta2"
MIN_CLUSTER_SHARDS = 3


def problems(spec: StackSpec) -> list[InputProblem]:
    """What this program cannot build from an otherwise valid spec."""
    found = []
    for index, region in enumerate(spec.regions):
        if 1 < region.redis.shards < MIN_CLUSTER_SHARDS:
            found.append(
                InputProblem(
                    "",
                    f"regions[{index}].redis.shards",
                    f"{region.redis.shards} shards: Redis Cluster needs at least "
                    f"{MIN_CLUSTER_SHARDS} (or use 1 shard with replicasPerShard)",
                )
            )
    return found


def check(spec: StackSpec, file: str) -> None:
    found = [InputProblem(file, p.path, p.message) for p in problems(spec)]
    if found:
        raise InvalidInputFile("stack spec", file, found)


def _release() -> HelmRelease:
    return HelmRelease(
        name="redis-operator",
        namespace=n.REDIS_OPERATOR_NAMESPACE,
        chart=REDIS_OPERATOR.chart,
        repo=REDIS_OPERATOR.repo,
        version=REDIS_OPERATOR.version,
        values={
            "redisOperator": {"watchNamespace": n.DATA_NAMESPACE},
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "500m", "memory": "256Mi"},
            },
        },
    )


def _role(region: Region, role: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "pdb": {"enabled": True, "maxUnavailable": 1},
        "topologySpreadConstraints": zone_spread(selector),
        "securityContext": RESTRICTED_CONTAINER,
    } | ({"replicas": region.redis.shards} if role == "leader" else {})


def redis(spec: StackSpec, region: Region) -> Manifest:
    kind = redis_kind(region)
    shards, replicas = region.redis.shards, region.redis.replicas_per_shard
    body: dict[str, Any] = {
        "kubernetesConfig": {
            "image": REDIS_IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "resources": profile("redis", region),
        },
        "redisExporter": {
            "enabled": True,
            "image": REDIS_EXPORTER_IMAGE,
            "resources": profile("redis-exporter", region),
            "securityContext": RESTRICTED_CONTAINER,
        },
        "storage": {"volumeClaimTemplate": pvc_template(redis_storage(region))},
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
    }
    if kind == "RedisCluster":
        body["clusterSize"] = shards
        body["persistenceEnabled"] = True
        body["redisLeader"] = _role(region, "leader", {"app": f"{n.REDIS_NAME}-leader"})
        follower = _role(region, "follower", {"app": f"{n.REDIS_NAME}-follower"})
        follower["replicas"] = shards * replicas
        body["redisFollower"] = follower
    elif kind == "RedisReplication":
        body["clusterSize"] = 1 + replicas
    return {
        "apiVersion": API,
        "kind": kind,
        "metadata": n.metadata(spec, region, "redis", n.REDIS_NAME, n.DATA_NAMESPACE),
        "spec": body,
    }


def replication_pdb(spec: StackSpec, region: Region) -> Manifest:
    """RedisReplication has no PDB field of its own; the operator labels its pods app=<name>."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": n.metadata(spec, region, "redis", n.REDIS_NAME, n.DATA_NAMESPACE),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": n.REDIS_NAME}}},
    }


def build(spec: StackSpec, region: Region) -> Component:
    objects = [redis(spec, region)]
    if redis_kind(region) == "RedisReplication":
        objects.append(replication_pdb(spec, region))
    return Component(
        name="redis",
        type_name="Redis",
        releases=(_release(),),
        objects=tuple(objects),
        depends_on=("platform",),
    )
