"""Strimzi: the operator, Kafka in KRaft mode with node pools, the IM topics, and
MirrorMaker 2 pulling every other region's messages, deliveries and events into this one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from opsctl.paths import REPO_ROOT
from opsctl.spec import Region, StackSpec
from opsctl.stack import _names as n
from opsctl.stack._certs import KAFKA_EXTERNAL_TLS_SECRET
from opsctl.stack._k8s import resources, zone_spread
from opsctl.stack._model import Component, HelmRelease, Manifest
from opsctl.stack._names import small
from opsctl.stack._sizing import kafka_controller_count, mirror_maker_replicas, profile
from opsctl.stack._versions import STRIMZI

API = "kafka.strimzi.io/v1beta2"
DLQ_TOPIC = f"{n.MESSAGE_TOPIC}.dlq"
_CLUSTER_LABEL = {"strimzi.io/cluster": n.KAFKA_CLUSTER}
MIRROR_NAME = "im-mirror"
# The JMX exporter mapping of MirrorMaker 2's MBeans, the same file the local stack uses.
MIRROR_JMX_FILE = REPO_ROOT / "alerts" / "exporters" / "mirrormaker-jmx.yaml"
MIRROR_METRICS_CONFIGMAP = f"{MIRROR_NAME}-metrics"
MIRROR_METRICS_KEY = MIRROR_JMX_FILE.name


# ---- who may do what (the one home of Kafka's ACLs, locally and in prod) ---------------------


@dataclass(frozen=True)
class KafkaAcl:
    """One allow rule: ``operations`` on the ``resource`` named ``name`` (a prefix of names
    when ``prefix``). The cluster resource's name is always ``kafka-cluster``."""

    resource: Literal["topic", "group", "cluster"]
    name: str
    operations: tuple[str, ...]
    prefix: bool = False

    def allows(self, resource: str, name: str, operation: str) -> bool:
        """Whether this rule grants ``operation`` on ``resource`` ``name`` (Kafka's matching:
        literal, the literal wildcard ``*``, or prefix)."""
        if resource != self.resource or operation not in self.operations:
            return False
        if self.prefix:
            return name.startswith(self.name)
        return self.name in ("*", name) or resource == "cluster"


def _topic_acl(name: str, *operations: str, prefix: bool = False) -> KafkaAcl:
    return KafkaAcl("topic", name, ("Describe", *operations), prefix)


# Local-only identities: the brokers' and opsctl's super user (KAFKA_SUPER_USER), migrate (it
# creates the topics locally; prod's are KafkaTopics and the migration Job runs CQL only) and
# the Kafka exporter (prod has none; Strimzi's own metrics are JMX).
KAFKA_SUPER_USER = "admin"
KAFKA_MIGRATE_USER = "migrate"
KAFKA_EXPORTER_USER = "exporter"
# Strimzi's Connect cluster under KafkaMirrorMaker2 (its group and internal topics' prefix)
# and MirrorMaker 2's own internal topics (offset syncs; a dedicated MirrorMaker's config,
# offset and status topics: the local stack's).
MIRROR_CONNECT_GROUP = "mirrormaker2-cluster"
MIRROR_INTERNAL_PREFIX = "mm2-"
MIRROR_HEARTBEATS_TOPIC = "heartbeats"


def mirror_group(source: str) -> str:
    """The group of a dedicated MirrorMaker 2's worker for the flow from ``source``."""
    return f"{source}-mm2"


def kafka_acls(region: str, peers: Sequence[str]) -> dict[str, tuple[KafkaAcl, ...]]:
    """Every Kafka identity of ``region`` (whose peers are ``peers``) and what it may do,
    least privilege; KAFKA_SUPER_USER has no rules (a super user needs none).

    - gateway: produce the messages topic.
    - dispatcher: consume its region-qualified group from the messages topic and each peer's
      mirrored copy; produce the dead letters and the deliveries for the peers' relays.
    - relay: consume its group from each peer's mirrored deliveries; produce its own
      deliveries topic (beacons, receipts, presence and membership events).
    - mirror-source: what the other regions' MirrorMaker 2 reads here: the mirrored topics and
      the dispatcher group's offsets (checkpoints), nothing written (offset syncs live in the
      target, MIRROR_OFFSET_SYNCS).
    - mirror-target: this region's MirrorMaker 2 on its own Kafka: the "<peer>." copies and
      its internal topics and group, nothing of this region's own topics.
    - migrate, exporter: local only (see above).
    """
    messages, deliveries = n.MESSAGE_TOPIC, n.DELIVERIES_TOPIC
    mirror_write = ("Create", "Read", "Write", "DescribeConfigs", "AlterConfigs")
    return {
        n.KAFKA_GATEWAY_USER: (_topic_acl(messages, "Write"),),
        n.KAFKA_DISPATCHER_USER: (
            _topic_acl(messages, "Read"),
            *(_topic_acl(f"{peer}.{messages}", "Read") for peer in peers),
            KafkaAcl("group", n.dispatcher_group(region), ("Read",)),
            _topic_acl(DLQ_TOPIC, "Write"),
            _topic_acl(deliveries, "Write"),
        ),
        n.KAFKA_RELAY_USER: (
            *(_topic_acl(f"{peer}.{deliveries}", "Read") for peer in peers),
            KafkaAcl("group", f"im-relay.{region}", ("Read",)),
            _topic_acl(deliveries, "Write"),
        ),
        n.KAFKA_MIRROR_SOURCE_USER: (
            *(_topic_acl(topic, "Read", "DescribeConfigs") for topic in n.MIRRORED_TOPICS),
            _topic_acl(MIRROR_HEARTBEATS_TOPIC, "Read", "DescribeConfigs"),
            KafkaAcl("group", n.dispatcher_group(region), ("Describe",)),
        ),
        n.KAFKA_MIRROR_TARGET_USER: (
            *(_topic_acl(f"{peer}.", *mirror_write, prefix=True) for peer in peers),
            _topic_acl(MIRROR_INTERNAL_PREFIX, *mirror_write, prefix=True),
            _topic_acl(MIRROR_CONNECT_GROUP, *mirror_write, prefix=True),
            _topic_acl(MIRROR_HEARTBEATS_TOPIC, *mirror_write),
            KafkaAcl("group", MIRROR_CONNECT_GROUP, ("Read", "Describe")),
            *(KafkaAcl("group", mirror_group(peer), ("Read", "Describe")) for peer in peers),
        ),
        KAFKA_MIGRATE_USER: (
            _topic_acl("im.", "Create", "Alter", "DescribeConfigs", "AlterConfigs", prefix=True),
            KafkaAcl("group", "*", ("Describe",)),  # the drained check reads every group
        ),
        KAFKA_EXPORTER_USER: (_topic_acl("*"), KafkaAcl("group", "*", ("Describe",))),
        KAFKA_SUPER_USER: (),
    }


def prod_kafka_users(region: Region, peers: Sequence[str]) -> tuple[str, ...]:
    """The identities with a KafkaUser in ``region``: the IM processes' (the relay only with
    peers) and, with peers, MirrorMaker 2's two."""
    del region
    users = [n.KAFKA_GATEWAY_USER, n.KAFKA_DISPATCHER_USER]
    if peers:
        users += [n.KAFKA_RELAY_USER, n.KAFKA_MIRROR_SOURCE_USER, n.KAFKA_MIRROR_TARGET_USER]
    return tuple(users)


def _peers(spec: StackSpec, region: Region) -> list[Region]:
    return [peer for peer in spec.regions if peer.name != region.name]


def _release(region: Region) -> HelmRelease:
    return HelmRelease(
        name="strimzi",
        namespace=n.STRIMZI_NAMESPACE,
        chart=STRIMZI.chart,
        repo=STRIMZI.repo,
        version=STRIMZI.version,
        values={
            "watchNamespaces": [n.DATA_NAMESPACE],
            "replicas": 1 if small(region) else 2,  # leader election; one active at a time
            "resources": resources("100m", "384Mi", "1", "384Mi"),
            "podDisruptionBudget": {"enabled": not small(region), "maxUnavailable": 1},
        },
    )


def _pool_template(pool: str) -> dict[str, Any]:
    labels = {**_CLUSTER_LABEL, "strimzi.io/pool-name": pool}
    return {"pod": {"topologySpreadConstraints": zone_spread(labels)}}


def node_pools(spec: StackSpec, region: Region) -> list[Manifest]:
    kafka = region.kafka
    broker_storage = {
        "type": "jbod",
        "volumes": [
            {
                "id": 0,
                "type": "persistent-claim",
                "size": kafka.storage,
                "deleteClaim": False,
                "kraftMetadata": "shared",
            }
        ],
    }
    controllers = kafka_controller_count(region)
    pools = []
    if controllers:
        pools.append(
            (
                "controllers",
                controllers,
                ["controller"],
                profile("kafka-controller", region),
                {
                    "type": "jbod",
                    "volumes": [
                        {
                            "id": 0,
                            "type": "persistent-claim",
                            "size": "10Gi",
                            "deleteClaim": False,
                            "kraftMetadata": "shared",
                        }
                    ],
                },
            )
        )
        pools.append(
            ("brokers", kafka.brokers, ["broker"], profile("kafka-broker", region), broker_storage)
        )
    else:
        pools.append(
            (
                "dual-role",
                kafka.brokers,
                ["controller", "broker"],
                profile("kafka-broker", region),
                broker_storage,
            )
        )
    manifests = []
    for name, replicas, roles, pod_resources, storage in pools:
        meta = n.metadata(spec, region, "kafka", name, n.DATA_NAMESPACE)
        meta["labels"] |= _CLUSTER_LABEL
        manifests.append(
            {
                "apiVersion": API,
                "kind": "KafkaNodePool",
                "metadata": meta,
                "spec": {
                    "replicas": replicas,
                    "roles": roles,
                    "storage": storage,
                    "resources": pod_resources,
                    "template": _pool_template(name),
                },
            }
        )
    return manifests


_SCRAM = {"type": "scram-sha-512"}


def _listeners(spec: StackSpec, region: Region) -> list[dict[str, Any]]:
    """The internal TLS listener (the app, this region's MirrorMaker 2) with the stack's
    certificate, so clients trust the environment's root CA; with peers, the external one,
    which admits only the peers' egress addresses (Strimzi's NetworkPolicy for it)."""
    internal = {
        "name": "tls",
        "port": n.KAFKA_PORTS["tls"],
        "type": "internal",
        "tls": True,
        "authentication": _SCRAM,
        "configuration": {
            "brokerCertChainAndKey": {
                "secretName": n.KAFKA_TLS_SECRET,
                "certificate": "tls.crt",
                "key": "tls.key",
            }
        },
        "networkPolicyPeers": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
            for ns in (n.APP_NAMESPACE, n.DATA_NAMESPACE)
        ],
    }
    peers = _peers(spec, region)
    if not peers:
        return [internal]  # nobody mirrors from a lone region: no external listener
    domain = n.region_domain(spec, region)
    external = {
        # Other regions' MirrorMaker 2 connects here, over the shared root CA.
        "name": "external",
        "port": n.KAFKA_PORTS["external"],
        "type": "loadbalancer",
        "tls": True,
        "authentication": _SCRAM,
        "configuration": {
            "brokerCertChainAndKey": {
                "secretName": KAFKA_EXTERNAL_TLS_SECRET,
                "certificate": "tls.crt",
                "key": "tls.key",
            },
            "bootstrap": {
                "alternativeNames": [f"kafka-bootstrap.{domain}"],
                "annotations": {
                    "external-dns.alpha.kubernetes.io/hostname": f"kafka-bootstrap.{domain}"
                },
            },
        },
        "networkPolicyPeers": [{"ipBlock": {"cidr": cidr}} for cidr in peer_cidrs(spec, region)],
    }
    return [internal, external]


def peer_cidrs(spec: StackSpec, region: Region) -> list[str]:
    """Where the other regions' traffic comes from (their egressCidrs, in spec order)."""
    return list(dict.fromkeys(c for peer in _peers(spec, region) for c in peer.egress_cidrs))


def kafka_users(spec: StackSpec, region: Region) -> list[Manifest]:
    """One KafkaUser per identity of prod_kafka_users: SCRAM-SHA-512 with the password of its
    Secret (created outside the stack, never generated into the resource), its ACLs."""
    peers = [peer.name for peer in _peers(spec, region)]
    acls = kafka_acls(region.name, peers)
    users = []
    for user in prod_kafka_users(region, peers):
        meta = n.metadata(spec, region, "kafka", user, n.DATA_NAMESPACE)
        meta["labels"] |= _CLUSTER_LABEL
        secret = {"name": n.kafka_user_secret(user), "key": n.PASSWORD_KEY}
        users.append(
            {
                "apiVersion": API,
                "kind": "KafkaUser",
                "metadata": meta,
                "spec": {
                    "authentication": {
                        **_SCRAM,
                        "password": {"valueFrom": {"secretKeyRef": secret}},
                    },
                    "authorization": {
                        "type": "simple",
                        "acls": [strimzi_acl(acl) for acl in acls[user]],
                    },
                },
            }
        )
    return users


def strimzi_acl(acl: KafkaAcl) -> dict[str, Any]:
    resource: dict[str, Any] = {"type": acl.resource}
    if acl.resource != "cluster":
        resource |= {"name": acl.name, "patternType": "prefix" if acl.prefix else "literal"}
    return {"type": "allow", "resource": resource, "operations": list(acl.operations)}


def kafka_cluster(spec: StackSpec, region: Region) -> Manifest:
    kafka = region.kafka
    meta = n.metadata(spec, region, "kafka", n.KAFKA_CLUSTER, n.DATA_NAMESPACE)
    meta["annotations"] = {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    entity = profile("kafka-entity-operator", region)
    return {
        "apiVersion": API,
        "kind": "Kafka",
        "metadata": meta,
        "spec": {
            "kafka": {
                # No version: the pinned operator runs its default Kafka, so the two move together.
                "listeners": _listeners(spec, region),
                # Every listener: SCRAM-SHA-512 over TLS; the ACLs of kafka_acls, one KafkaUser
                # per identity (Strimzi's own components are super users by their certificates).
                "authorization": {"type": "simple"},
                "rack": {"topologyKey": n.ZONE_KEY},
                "config": {
                    "default.replication.factor": kafka.replication_factor,
                    "min.insync.replicas": kafka.min_insync_replicas,
                    "offsets.topic.replication.factor": kafka.replication_factor,
                    "transaction.state.log.replication.factor": kafka.replication_factor,
                    "transaction.state.log.min.isr": kafka.min_insync_replicas,
                    "auto.create.topics.enable": False,
                    "unclean.leader.election.enable": False,
                },
            },
            "entityOperator": {
                "topicOperator": {"resources": entity},
                "userOperator": {"resources": entity},
            },
        },
    }


def _topic(
    spec: StackSpec, region: Region, name: str, topic: str, config: dict[str, Any]
) -> Manifest:
    kafka = region.kafka
    meta = n.metadata(spec, region, "kafka", name, n.DATA_NAMESPACE)
    meta["labels"] |= _CLUSTER_LABEL
    return {
        "apiVersion": API,
        "kind": "KafkaTopic",
        "metadata": meta,
        "spec": {
            "topicName": topic,
            "partitions": kafka.message_partitions,
            "replicas": kafka.replication_factor,
            "config": {"min.insync.replicas": kafka.min_insync_replicas, **config},
        },
    }


def topics(spec: StackSpec, region: Region) -> list[Manifest]:
    # auto.create.topics.enable is off: every topic the IM processes use exists here.
    # The mirrored "<peer>.<topic>" copies are created by MirrorMaker 2 itself.
    live = {
        "cleanup.policy": "delete",
        "retention.ms": 86_400_000,
        "max.message.bytes": 1_048_576,
        "unclean.leader.election.enable": False,
    }
    return [
        _topic(
            spec,
            region,
            "im-messages",
            n.MESSAGE_TOPIC,
            {
                "cleanup.policy": "delete",
                "retention.ms": 604_800_000,  # 7 days; devices sync older history from Cassandra
                "max.message.bytes": 1_048_576,
                "unclean.leader.election.enable": False,
            },
        ),
        _topic(
            spec,
            region,
            "im-messages-dlq",
            DLQ_TOPIC,
            {"cleanup.policy": "delete", "retention.ms": 2_592_000_000},
        ),
        # Live delivery across regions (relays start at the latest offset; history is in
        # Cassandra), so a day is plenty, also for a region that is down a few hours.
        _topic(spec, region, "im-deliveries", n.DELIVERIES_TOPIC, live),
    ]


def topics_pattern() -> str:
    """The regex (whole names) of what every region mirrors from every other region."""
    return "|".join(_literal(topic) for topic in n.MIRRORED_TOPICS)


def _literal(name: str) -> str:
    # Topic, group and region names hold [A-Za-z0-9._-]; only the dot is special in a regex.
    return name.replace(".", r"\.")


# Replication policy and checkpoints, the same in the source and checkpoint connectors: the
# dispatcher reads "<peer>.im.messages" and the relay "<peer>.im.deliveries" (the source alias
# and a dot, docs/multi-region.md section 3).
_POLICY = {
    "replication.policy.class": n.REPLICATION_POLICY,
    "replication.policy.separator": n.REPLICATION_SEPARATOR,
}
CHECKPOINT_INTERVAL_S = 5


def mirror_maker(spec: StackSpec, region: Region) -> Manifest | None:
    """Pull the mirrored topics of every other region into this one (prefixed by its alias),
    with checkpoints of the peer's dispatcher group."""
    peers = _peers(spec, region)
    if not peers:
        return None
    # Both certificates chain to the environment's root CA (their ca.crt).
    trusted = {
        "trustedCertificates": [{"secretName": KAFKA_EXTERNAL_TLS_SECRET, "certificate": "ca.crt"}]
    }
    local_trusted = {
        "trustedCertificates": [{"secretName": n.KAFKA_TLS_SECRET, "certificate": "ca.crt"}]
    }
    rf = region.kafka.replication_factor
    clusters = [
        {
            "alias": region.name,
            "bootstrapServers": n.kafka_bootstrap(region),
            "tls": local_trusted,
            "authentication": _login(n.KAFKA_MIRROR_TARGET_USER),
            "config": {
                "config.storage.replication.factor": rf,
                "offset.storage.replication.factor": rf,
                "status.storage.replication.factor": rf,
                # Source offsets flushed often, so a restart replays little (the duplicates
                # are absorbed by message_seqs, docs/multi-region.md 5.2).
                "offset.flush.interval.ms": 2000,
            },
        }
    ]
    clusters += [
        {
            "alias": peer.name,
            "bootstrapServers": n.kafka_external_bootstrap(spec, peer),
            "tls": trusted,
            # Read-only there: the same identity in every region (its Secret holds the one
            # password the environment's mirror-source users share).
            "authentication": _login(n.KAFKA_MIRROR_SOURCE_USER),
        }
        for peer in peers
    ]
    mirrors = [
        {
            "sourceCluster": peer.name,
            "targetCluster": region.name,
            "topicsPattern": topics_pattern(),
            # Checkpoints translate the peer dispatcher group's committed offsets on its own
            # im.messages into offsets of this region's "<peer>.im.messages": how far the old
            # home had sequenced, for an unplanned failover (docs/multi-region.md 7.2). Only
            # that region-qualified group; other groups are the peer's own business.
            "groupsPattern": _literal(n.dispatcher_group(peer)),
            "sourceConnector": {
                "tasksMax": max(1, min(region.kafka.message_partitions, 8)),
                "config": {
                    **_POLICY,
                    "replication.factor": rf,
                    "offset-syncs.topic.replication.factor": rf,
                    # Offset syncs at most this many records apart: checkpoints stay precise.
                    "offset.lag.max": 100,
                    # In the target: mirror-source may not write the peer's Kafka.
                    "offset-syncs.topic.location": "target",
                    "sync.topic.acls.enabled": "false",
                    "refresh.topics.interval.seconds": 30,
                },
            },
            "checkpointConnector": {
                "tasksMax": 1,
                "config": {
                    **_POLICY,
                    "checkpoints.topic.replication.factor": rf,
                    "emit.checkpoints.enabled": "true",
                    "offset-syncs.topic.location": "target",
                    "emit.checkpoints.interval.seconds": CHECKPOINT_INTERVAL_S,
                    # Never write translated offsets into this region's groups: each region's
                    # dispatcher group is its own and reads the mirror on its own terms.
                    "sync.group.offsets.enabled": "false",
                    "refresh.groups.interval.seconds": 30,
                },
            },
        }
        for peer in peers
    ]
    meta = n.metadata(spec, region, "kafka", MIRROR_NAME, n.DATA_NAMESPACE)
    replicas = mirror_maker_replicas(region)
    return {
        "apiVersion": API,
        "kind": "KafkaMirrorMaker2",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "connectCluster": region.name,
            "clusters": clusters,
            "mirrors": mirrors,
            "resources": profile("mirror-maker", region),
            "metricsConfig": {
                "type": "jmxPrometheusExporter",
                "valueFrom": {
                    "configMapKeyRef": {"name": MIRROR_METRICS_CONFIGMAP, "key": MIRROR_METRICS_KEY}
                },
            },
            "rack": {"topologyKey": n.ZONE_KEY},
            "template": {
                "pod": {
                    "topologySpreadConstraints": zone_spread(
                        {"strimzi.io/cluster": "im-mirror", "strimzi.io/kind": "KafkaMirrorMaker2"}
                    )
                },
                "podDisruptionBudget": {"maxUnavailable": 1},
            },
        },
    }


def _login(user: str) -> dict[str, Any]:
    return {
        **_SCRAM,
        "username": user,
        "passwordSecret": {"secretName": n.kafka_user_secret(user), "password": n.PASSWORD_KEY},
    }


def mirror_maker_monitoring(spec: StackSpec, region: Region) -> list[Manifest]:
    """The exporter mapping MirrorMaker 2's pods load, and the PodMonitor that scrapes them
    (Strimzi serves the agent on the ``tcp-prometheus`` port)."""
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": n.metadata(spec, region, "kafka", MIRROR_METRICS_CONFIGMAP, n.DATA_NAMESPACE),
        "data": {MIRROR_METRICS_KEY: MIRROR_JMX_FILE.read_text()},
    }
    meta = n.metadata(spec, region, "kafka", MIRROR_NAME, n.DATA_NAMESPACE)
    meta["labels"] |= n.MONITORING_SELECTOR
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": meta,
        "spec": {
            "selector": {
                "matchLabels": {
                    "strimzi.io/cluster": MIRROR_NAME,
                    "strimzi.io/kind": "KafkaMirrorMaker2",
                }
            },
            "podMetricsEndpoints": [
                {
                    "port": "tcp-prometheus",
                    "path": "/metrics",
                    "relabelings": [
                        {"action": "replace", "targetLabel": "job", "replacement": "mirrormaker"},
                        {"action": "replace", "targetLabel": "region", "replacement": region.name},
                    ],
                }
            ],
        },
    }
    return [config, monitor]


def build(spec: StackSpec, region: Region) -> Component:
    objects = [kafka_cluster(spec, region), *node_pools(spec, region), *topics(spec, region)]
    objects += kafka_users(spec, region)
    mirror = mirror_maker(spec, region)
    if mirror is not None:
        objects += [*mirror_maker_monitoring(spec, region), mirror]
    return Component(
        name="kafka",
        type_name="Kafka",
        releases=(_release(region),),
        objects=tuple(objects),
        depends_on=("platform", "pki"),
    )
