"""Names, namespaces, labels and endpoints shared by the builders (and the chart values).

The one home of these names: the builders, ``opsctl alerts`` and ``opsctl dashboards`` (the
PrometheusRules and dashboard ConfigMaps they render and apply) and ``opsctl status`` (the
in-cluster Prometheus it reaches through the API server) all read them from here.

The gateway's backend URLs are computed here from the same names the Kafka, Redis and
Cassandra builders use, so they cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Any

from opsctl.spec import Region, StackSpec

APP_NAMESPACE = "im"
DATA_NAMESPACE = "im-data"
MONITORING_NAMESPACE = "monitoring"
CERT_MANAGER_NAMESPACE = "cert-manager"
STRIMZI_NAMESPACE = "strimzi"
CASS_OPERATOR_NAMESPACE = "cass-operator"
REDIS_OPERATOR_NAMESPACE = "redis-operator"

GATEWAY_RELEASE = "im-gateway"
KAFKA_CLUSTER = "im-kafka"
MESSAGE_TOPIC = "im.messages"
# Persisted messages for the other regions' relays, and receipts/presence changes
# (docs/multi-region.md section 6); gateway.config's IMGW_KAFKA_DELIVERIES_TOPIC default.
DELIVERIES_TOPIC = "im.deliveries"
# What MirrorMaker 2 mirrors into every other region (docs/multi-region.md sections 3 and 6);
# the local stack's MirrorMaker mirrors the same. Receipts and presence ride on the
# deliveries topic: there is no events topic.
MIRRORED_TOPICS = (MESSAGE_TOPIC, DELIVERIES_TOPIC)
# MirrorMaker 2's DefaultReplicationPolicy: a mirrored topic is "<source alias>.<topic>".
REPLICATION_POLICY = "org.apache.kafka.connect.mirror.DefaultReplicationPolicy"
REPLICATION_SEPARATOR = "."
# Kafka's logins (docs/security.md): SCRAM-SHA-512 over TLS on every listener, simple
# authorization with the ACLs of opsctl.stack._kafka.kafka_acls. One KafkaUser per identity
# (its name is the SCRAM user name); its password comes from a Secret created outside the
# stack (keys username and password, kafka_user_secret(user)), in the data namespace for the
# KafkaUser and MirrorMaker 2 and in the app namespace for the pods that log in with it.
KAFKA_GATEWAY_USER = "gateway"
KAFKA_DISPATCHER_USER = "dispatcher"
KAFKA_RELAY_USER = "relay"
# The other regions' MirrorMaker 2 reads this region's Kafka as mirror-source (read-only);
# this region's own MirrorMaker 2 writes the mirrored copies here as mirror-target.
KAFKA_MIRROR_SOURCE_USER = "mirror-source"
KAFKA_MIRROR_TARGET_USER = "mirror-target"
# The brokers' certificate on the internal TLS listener (cert-manager, data namespace).
KAFKA_TLS_SECRET = "im-kafka-tls"
CASSANDRA_CLUSTER = "im"
CASSANDRA_KEYSPACE = "im"
# The shard map, held records and dispatcher epochs (gateway.config's
# IMGW_CASSANDRA_CONTROL_KEYSPACE default; docs/multi-region.md section 2).
CASSANDRA_CONTROL_KEYSPACE = "im_control"
# Cassandra's roles (PasswordAuthenticator, CassandraAuthorizer): migrate owns the schema
# (creates the tables), the gateway and the dispatcher (the relay runs as the dispatcher) may
# only read and write the IM keyspaces. Each login is a Secret of its own (keys username and
# password) in the app namespace; cass-operator creates the roles from them.
CASSANDRA_MIGRATE_ROLE = "migrate"
CASSANDRA_GATEWAY_ROLE = "gateway"
CASSANDRA_DISPATCHER_ROLE = "dispatcher"
CASSANDRA_APP_ROLES = (CASSANDRA_GATEWAY_ROLE, CASSANDRA_DISPATCHER_ROLE)
# The client port's certificate (TLS only; cert-manager, data namespace).
CASSANDRA_CLIENT_TLS_SECRET = "im-cassandra-client-tls"
REDIS_NAME = "im-redis"
# Redis speaks TLS only and knows ACL users (docs/security.md). Its certificate (cert-manager,
# data namespace); the ACL file (key user.acl, the rules of opsctl.stack._redis.REDIS_ACL with
# each user's password) and the operator's admin password (key password) are Secrets created
# outside the stack, like Grafana's. Each identity's login is a Secret of its own (keys
# username and password) in the namespace of the pods that use it: im for the gateway and the
# dispatcher (the relay runs as the dispatcher), im-data for the exporter.
REDIS_TLS_SECRET = "im-redis-tls"
REDIS_ACL_SECRET = "im-redis-acl"
REDIS_ACL_KEY = "user.acl"
REDIS_ADMIN_SECRET = "im-redis-admin"
REDIS_GATEWAY_USER = "gateway"
REDIS_DISPATCHER_USER = "dispatcher"
REDIS_EXPORTER_USER = "exporter"
USERNAME_KEY = "username"
PASSWORD_KEY = "password"
# cert-manager writes the issuing CA into every Certificate's Secret under this key.
CA_CERT_KEY = "ca.crt"
MONITORING_RELEASE = "kube-prometheus-stack"
# kube-prometheus-stack's default rule and ServiceMonitor selectors match its release label
# (the chart's serviceMonitor.labels default to it too).
MONITORING_SELECTOR = {"release": MONITORING_RELEASE}
# The operator's Prometheus pods carry this (the chart's network policy lets them scrape).
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}
# Its Grafana sidecar imports every ConfigMap carrying this label with this value.
GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"
GRAFANA_DASHBOARD_LABEL_VALUE = "1"
# Grafana's admin login: a Secret in the monitoring namespace (keys below), created outside the
# stack like the alert receivers' Secrets; the chart's default password is never used.
GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_ADMIN_USER_KEY = "admin-user"
GRAFANA_ADMIN_PASSWORD_KEY = "admin-password"
# The Service the Prometheus operator creates for every Prometheus, and its "web" port.
PROMETHEUS_SERVICE = "prometheus-operated"
PROMETHEUS_PORT = 9090

ROOT_CA_SECRET = "im-root-ca"
CA_ISSUER = "im-ca"
SELF_SIGNED_ISSUER = "im-selfsigned"

# Outside names for what crosses regions. The spec has no DNS zone yet; this is the convention
# external-dns publishes (see infra/README.md).
DNS_SUFFIX = "im.internal"

ZONE_KEY = "topology.kubernetes.io/zone"
REGION_LABEL = "im.platform/region"
ENVIRONMENT_LABEL = "im.platform/environment"
COMPONENT_LABEL = "app.kubernetes.io/component"
# Every object of the stack carries these, whichever tool applied it last (Pulumi, or
# `opsctl alerts|dashboards apply`, whose field manager is "opsctl"): one object, one value.
MANAGED_BY = {"app.kubernetes.io/managed-by": "imstack", "app.kubernetes.io/part-of": "im-platform"}

# No plaintext listener: the in-cluster clients use "tls", other regions "external".
KAFKA_PORTS = {"tls": 9093, "external": 9094}
CASSANDRA_CQL_PORT = 9042
CASSANDRA_INTERNODE_PORT = 7001  # TLS storage port
REDIS_PORT = 6379


def labels(spec: StackSpec, region: Region, component: str) -> dict[str, str]:
    return {
        **MANAGED_BY,
        COMPONENT_LABEL: component,
        REGION_LABEL: region.name,
        ENVIRONMENT_LABEL: spec.environment,
    }


def metadata(
    spec: StackSpec, region: Region, component: str, name: str, namespace: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels(spec, region, component)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def prometheus_proxy_path() -> str:
    """The in-cluster Prometheus's HTTP API root through the API server's service proxy."""
    return (
        f"/api/v1/namespaces/{MONITORING_NAMESPACE}/services/"
        f"{PROMETHEUS_SERVICE}:{PROMETHEUS_PORT}/proxy"
    )


def region_domain(spec: StackSpec, region: Region) -> str:
    return f"{region.name}.{spec.environment}.{DNS_SUFFIX}"


def dispatcher_group(region: Region | str) -> str:
    """The dispatcher's consumer group in a region (gateway.config's default): region-qualified,
    so no two regions share one and MirrorMaker 2's checkpoints of one region's group never
    apply to another's."""
    return f"im-dispatcher.{region if isinstance(region, str) else region.name}"


def relay_group(region: Region) -> str:
    return f"im-relay.{region.name}"


def mirrored_topic(source: Region, topic: str) -> str:
    """The name a topic of ``source`` has in every other region."""
    return f"{source.name}{REPLICATION_SEPARATOR}{topic}"


def kafka_bootstrap(region: Region) -> str:
    del region  # the same in-cluster name in every region
    return f"{KAFKA_CLUSTER}-kafka-bootstrap.{DATA_NAMESPACE}.svc:{KAFKA_PORTS['tls']}"


def kafka_dns_names() -> list[str]:
    """Every name a client of the internal TLS listener dials: the bootstrap Service and the
    brokers Strimzi advertises behind its headless Service."""
    base = f"{DATA_NAMESPACE}.svc"
    return [f"{KAFKA_CLUSTER}-kafka-bootstrap.{base}", f"*.{KAFKA_CLUSTER}-kafka-brokers.{base}"]


def kafka_external_bootstrap(spec: StackSpec, region: Region) -> str:
    return f"kafka-bootstrap.{region_domain(spec, region)}:{KAFKA_PORTS['external']}"


def cassandra_service(region: Region) -> str:
    # cass-operator names the client Service <cluster>-<datacenter>-service.
    return f"{CASSANDRA_CLUSTER}-{region.name}-service.{DATA_NAMESPACE}.svc:{CASSANDRA_CQL_PORT}"


def cassandra_seed_host(spec: StackSpec, region: Region) -> str:
    return f"cassandra-seeds.{region_domain(spec, region)}"


def redis_kind(region: Region) -> str:
    """Which custom resource of the Redis operator serves this region's sizing."""
    if region.redis.shards > 1:
        return "RedisCluster"
    return "RedisReplication" if region.redis.replicas_per_shard > 0 else "Redis"


def redis_url(region: Region) -> str:
    # The operator names the client Service after the resource; a cluster's is <name>-leader.
    service = {
        "RedisCluster": f"{REDIS_NAME}-leader",
        "RedisReplication": f"{REDIS_NAME}-master",
        "Redis": REDIS_NAME,
    }[redis_kind(region)]
    return f"rediss://{service}.{DATA_NAMESPACE}.svc:{REDIS_PORT}/0"


def redis_dns_names() -> list[str]:
    """Every name a Redis client may dial, whatever the kind: the operator's client Services
    and its pods behind the headless ones (a cluster client follows MOVED to pod names)."""
    base = f"{DATA_NAMESPACE}.svc"
    services = [REDIS_NAME, f"{REDIS_NAME}-master", f"{REDIS_NAME}-leader"]
    headless = [f"{REDIS_NAME}-headless", f"{REDIS_NAME}-leader-headless"]
    headless.append(f"{REDIS_NAME}-follower-headless")
    return [f"{name}.{base}" for name in services] + [f"*.{name}.{base}" for name in headless]


def cassandra_role_secret(role: str) -> str:
    """The Secret holding one Cassandra role's login (keys USERNAME_KEY and PASSWORD_KEY)."""
    return f"{CASSANDRA_CLUSTER}-cassandra-{role}"


def kafka_user_secret(user: str) -> str:
    """The Secret holding one Kafka identity's login (keys USERNAME_KEY and PASSWORD_KEY)."""
    return f"{KAFKA_CLUSTER}-{user}"


def redis_user_secret(user: str) -> str:
    """The Secret holding one Redis identity's login (keys USERNAME_KEY and PASSWORD_KEY)."""
    return f"{REDIS_NAME}-{user}"


def small(region: Region) -> bool:
    """Sizing class: a region under 100k peak users gets the small resource profile."""
    return region.peak_concurrent_users < 100_000


def region_reconnect_budget(spec: StackSpec, region: Region) -> float:
    """The region's share (by peak users, at least an equal share) of the stack's reconnect
    budget, in reconnects per second."""
    total = sum(r.peak_concurrent_users for r in spec.regions) or 1
    share = max(region.peak_concurrent_users / total, 1 / len(spec.regions))
    return spec.reconnect_budget.reconnects_per_second * share


def drain_window_seconds(spec: StackSpec, region: Region) -> int:
    """Seconds over which one draining gateway pod asks its clients to reconnect.

    The region gets its share (by peak users) of the stack's reconnect budget; one pod's
    connections spread over the window must fit in it. Clamped to 30 s .. 10 min.
    """
    budget = region_reconnect_budget(spec, region)
    window = math.ceil(region.gateway.connections_per_pod / budget)
    return min(max(window, 30), 600)
