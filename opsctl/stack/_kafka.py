"""Strimzi: the operator, Kafka in KRaft mode with node pools, the IM topics, and
MirrorMaker 2 pulling every other region's messages, deliveries and events into this one."""

from __future__ import annotations

from typing import Any

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


def kafka_cluster(spec: StackSpec, region: Region) -> Manifest:
    kafka = region.kafka
    meta = n.metadata(spec, region, "kafka", n.KAFKA_CLUSTER, n.DATA_NAMESPACE)
    meta["annotations"] = {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    domain = n.region_domain(spec, region)
    entity = profile("kafka-entity-operator", region)
    return {
        "apiVersion": API,
        "kind": "Kafka",
        "metadata": meta,
        "spec": {
            "kafka": {
                # No version: the pinned operator runs its default Kafka, so the two move together.
                "listeners": [
                    {
                        "name": "plain",
                        "port": n.KAFKA_PORTS["plain"],
                        "type": "internal",
                        "tls": False,
                    },
                    {"name": "tls", "port": n.KAFKA_PORTS["tls"], "type": "internal", "tls": True},
                    {
                        # Other regions' MirrorMaker 2 connects here, over the shared root CA.
                        "name": "external",
                        "port": n.KAFKA_PORTS["external"],
                        "type": "loadbalancer",
                        "tls": True,
                        "configuration": {
                            "brokerCertChainAndKey": {
                                "secretName": KAFKA_EXTERNAL_TLS_SECRET,
                                "certificate": "tls.crt",
                                "key": "tls.key",
                            },
                            "bootstrap": {
                                "alternativeNames": [f"kafka-bootstrap.{domain}"],
                                "annotations": {
                                    "external-dns.alpha.kubernetes.io/hostname": (
                                        f"kafka-bootstrap.{domain}"
                                    )
                                },
                            },
                        },
                    },
                ],
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
        _topic(spec, region, "im-events", n.EVENTS_TOPIC, live),
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
    peers = [peer for peer in spec.regions if peer.name != region.name]
    if not peers:
        return None
    trusted = {
        "trustedCertificates": [{"secretName": KAFKA_EXTERNAL_TLS_SECRET, "certificate": "ca.crt"}]
    }
    rf = region.kafka.replication_factor
    clusters = [
        {
            "alias": region.name,
            "bootstrapServers": n.kafka_bootstrap(region),
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
