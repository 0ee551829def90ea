"""Redis per region with the OT-CONTAINER-KIT redis-operator: presence and routing stay regional.

The resource follows the sizing: one shard without replicas is a standalone ``Redis``; one
shard with replicas is a ``RedisReplication``; several shards are a ``RedisCluster`` (Redis
Cluster needs at least three).
"""

from __future__ import annotations

import hashlib
from typing import Any

from gateway.state import PREFIX as STATE_PREFIX
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

# The Redis ACL users, least privilege (the same rules locally and in prod). The gateway and
# the dispatcher (the relay runs as the dispatcher) reach only the IM keys and channels
# (gateway/state.py PREFIX), with no admin, dangerous or function commands; the cluster
# client may read the slot map. The exporter reads INFO and a few diagnostics, no key and no
# CONFIG (it would show a replica's masterauth). ``replica`` may only replicate; ``admin`` is
# the operator's own login (opsctl, tests; the redis-operator's default user in prod).
_APP_ACL = (
    f"~{STATE_PREFIX}* &{STATE_PREFIX}* -@all +@read +@write +@pubsub +@scripting "
    "+@transaction +@connection -@dangerous -@admin -function -script|flush -script|kill "
    "+cluster|slots +cluster|shards +readonly +readwrite +asking"
)
REDIS_ACL: dict[str, str] = {
    n.REDIS_GATEWAY_USER: _APP_ACL,
    n.REDIS_DISPATCHER_USER: _APP_ACL,
    n.REDIS_EXPORTER_USER: (
        "-@all +@connection +info +client|list +slowlog|get +slowlog|len +latency|latest "
        "+latency|histogram +memory|stats +cluster|info"
    ),
    "replica": "-@all +psync +replconf +ping",
    "admin": "~* &* +@all",
}


# The identities prod's ACL file holds; its default user is the operator's admin (the operator
# logs in as default with the redisSecret password), so ``admin`` maps to ``default`` there.
PROD_ACL_USERS = (n.REDIS_GATEWAY_USER, n.REDIS_DISPATCHER_USER, n.REDIS_EXPORTER_USER)


def password_hash(password: str) -> str:
    """The ACL form of a password (``#<sha256>``): an ACL holds the hash, never the value."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl_rule(user: str, password: str) -> str:
    """One ``user`` line's body for ``REDIS_ACL[user]``: enabled, its password's hash, rules."""
    return f"reset on {password_hash(password)} {REDIS_ACL[user]}"


def acl_file(passwords: dict[str, str]) -> str:
    """The ``user.acl`` of Secret REDIS_ACL_SECRET, from each identity's password (and
    ``admin``'s, which becomes the default user the operator logs in as)."""
    missing = [user for user in ("admin", *PROD_ACL_USERS) if user not in passwords]
    if missing:
        raise ValueError(f"no password for {', '.join(missing)}")
    lines = [f"user default {acl_rule('admin', passwords['admin'])}"]
    lines += [f"user {user} {acl_rule(user, passwords[user])}" for user in PROD_ACL_USERS]
    return "\n".join(lines) + "\n"


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
            # The operator's own login (probes, cluster setup): Redis' default user.
            "redisSecret": {"name": n.REDIS_ADMIN_SECRET, "key": n.PASSWORD_KEY},
        },
        # TLS only, with the certificate the stack issues (opsctl.stack._certs); the ACL users
        # (REDIS_ACL, with the passwords) from a Secret created outside the stack.
        "TLS": {
            "ca": n.CA_CERT_KEY,
            "cert": "tls.crt",
            "key": "tls.key",
            "secret": {"secretName": n.REDIS_TLS_SECRET},
        },
        "acl": {"secret": {"secretName": n.REDIS_ACL_SECRET}},
        "redisExporter": {
            "enabled": True,
            "image": REDIS_EXPORTER_IMAGE,
            "resources": profile("redis-exporter", region),
            "securityContext": RESTRICTED_CONTAINER,
            # Scrapes as its own ACL user (INFO only), not as the operator's admin.
            "env": [
                {"name": "REDIS_USER", "value": n.REDIS_EXPORTER_USER},
                {
                    "name": "REDIS_PASSWORD",
                    "valueFrom": {
                        "secretKeyRef": {
                            "name": n.redis_user_secret(n.REDIS_EXPORTER_USER),
                            "key": n.PASSWORD_KEY,
                        }
                    },
                },
            ],
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
