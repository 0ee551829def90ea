"""The gateway and dispatcher through our chart (charts/im-gateway), with values from the spec.

Backend endpoints come from the same names the Kafka, Redis and Cassandra builders create.
"""

from __future__ import annotations

import math
from typing import Any

from opsctl.paths import REPO_ROOT
from opsctl.spec import Region, StackSpec
from opsctl.stack import _names as n
from opsctl.stack._certs import GATEWAY_TLS_SECRET
from opsctl.stack._model import Component, LocalChart
from opsctl.stack._sizing import profile, relay_replicas

CHART_PATH = REPO_ROOT / "charts" / "im-gateway"


def image_values(reference: str) -> dict[str, str]:
    """Split registry/name:tag[@sha256:...] into the chart's repository/tag/digest."""
    name, _, digest = reference.partition("@")
    repository, tag = name, ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = name.rsplit(":", 1)
    values = {"repository": repository, "tag": tag}
    if digest:
        values["digest"] = digest
    return values


def chart_values(spec: StackSpec, region: Region) -> dict[str, Any]:
    gateway, dispatcher = region.gateway, region.dispatcher
    data_ns = {"matchLabels": {"kubernetes.io/metadata.name": n.DATA_NAMESPACE}}
    multi = len(spec.regions) > 1
    values: dict[str, Any] = {
        "region": region.name,
        # IMGW_REGIONS: the shard map's rendezvous set, and the peers whose mirrored topics the
        # dispatcher and relay consume (docs/multi-region.md sections 2, 3 and 6).
        "regions": [r.name for r in spec.regions] if multi else [],
        "commonLabels": {n.ENVIRONMENT_LABEL: spec.environment},
        "kafka": {
            "bootstrap": n.kafka_bootstrap(region),
            "topic": n.MESSAGE_TOPIC,
            "deliveriesTopic": n.DELIVERIES_TOPIC,
            # The internal listener's certificate chains to the same root CA as the gateway's.
            "caSecret": GATEWAY_TLS_SECRET,
            "auth": {
                "gatewaySecret": n.kafka_user_secret(n.KAFKA_GATEWAY_USER),
                "dispatcherSecret": n.kafka_user_secret(n.KAFKA_DISPATCHER_USER),
                # A relay only runs with peers; then it has a KafkaUser of its own.
                "relaySecret": n.kafka_user_secret(n.KAFKA_RELAY_USER) if multi else "",
            },
        },
        "redis": {
            "url": n.redis_url(region),
            # Sharded regions run a Redis Cluster; the gateway must speak the cluster protocol.
            "cluster": n.redis_kind(region) == "RedisCluster",
            # Redis' certificate chains to the environment's root CA, which is the ca.crt of
            # every certificate the stack issues, the gateway's included.
            "caSecret": GATEWAY_TLS_SECRET,
            "auth": {
                "gatewaySecret": n.redis_user_secret(n.REDIS_GATEWAY_USER),
                "dispatcherSecret": n.redis_user_secret(n.REDIS_DISPATCHER_USER),
            },
        },
        "cassandra": {
            "hosts": n.cassandra_service(region),
            "keyspace": n.CASSANDRA_KEYSPACE,
            "datacenter": region.name,
            # The client port's certificate chains to the same root CA as the gateway's.
            "caSecret": GATEWAY_TLS_SECRET,
            "auth": {
                "gatewaySecret": n.cassandra_role_secret(n.CASSANDRA_GATEWAY_ROLE),
                "dispatcherSecret": n.cassandra_role_secret(n.CASSANDRA_DISPATCHER_ROLE),
                "migrateSecret": n.cassandra_role_secret(n.CASSANDRA_MIGRATE_ROLE),
            },
        },
        "gateway": {
            "image": image_values(spec.images.gateway),
            "drainWindowSeconds": n.drain_window_seconds(spec, region),
            # The chart derives maxSurge and minReadySeconds from it (its README): a rolling
            # update outside `opsctl rollout` stays within the region's share of the budget.
            "strategy": {
                "reconnectsPerSecond": max(1, math.floor(n.region_reconnect_budget(spec, region)))
            },
            # Headroom above the HPA target so a pod can absorb a neighbour's reconnects.
            "limits": {"maxConnections": math.ceil(gateway.connections_per_pod * 1.2)},
            "resources": profile("gateway", region),
            "podAntiAffinity": "soft" if n.small(region) else "hard",
            "autoscaling": {
                "enabled": True,
                "minReplicas": gateway.replicas,
                "maxReplicas": gateway.max_replicas,
                "connectionsPerPod": gateway.connections_per_pod,
            },
        },
        "dispatcher": {
            "image": image_values(spec.images.dispatcher),
            "replicas": dispatcher.replicas,
            "resources": profile("dispatcher", region),
            "autoscaling": {
                "enabled": dispatcher.max_replicas > dispatcher.replicas,
                "minReplicas": dispatcher.replicas,
                "maxReplicas": dispatcher.max_replicas,
            },
        },
        "relay": {
            "enabled": multi,
            "replicas": relay_replicas(region),
            "resources": profile("relay", region),
        },
        "networkPolicy": {
            "enabled": True,
            "kafka": {
                "namespaceSelector": data_ns,
                "podSelector": {"matchLabels": {"strimzi.io/cluster": n.KAFKA_CLUSTER}},
                "ports": [n.KAFKA_PORTS["tls"]],
            },
            "redis": {
                # The operator's pod labels differ by Redis kind; the namespace and port suffice.
                "namespaceSelector": data_ns,
                "podSelector": {"matchLabels": {}},
                "ports": [n.REDIS_PORT],
            },
            "cassandra": {
                "namespaceSelector": data_ns,
                "podSelector": {
                    "matchLabels": {"cassandra.datastax.com/cluster": n.CASSANDRA_CLUSTER}
                },
                "ports": [n.CASSANDRA_CQL_PORT],
            },
        },
    }
    auth = spec.auth
    if auth is not None:
        # The JWKS (a Secret or the IdP's URL) and the claims every token must carry.
        values["auth"] = {
            "existingSecret": auth.jwks_secret_ref or "",
            "jwksUrl": auth.jwks_url or "",
            "issuer": auth.issuer or "",
            "audience": auth.audience or "",
        }
    return values


def build(spec: StackSpec, region: Region) -> Component:
    chart = LocalChart(
        name=n.GATEWAY_RELEASE,
        namespace=n.APP_NAMESPACE,
        path=CHART_PATH,
        values=chart_values(spec, region),
    )
    return Component(
        name="gateway",
        type_name="Gateway",
        charts=(chart,),
        depends_on=("platform", "pki", "monitoring", "kafka", "cassandra", "redis"),
    )
