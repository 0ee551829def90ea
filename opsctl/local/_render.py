"""The local stack's config files, rendered by pure functions (unit-tested without processes).

One function per file a component reads: ``redis.conf``, Kafka's ``server.properties`` and
log4j2 config, ``cassandra.yaml`` and logback config, ``prometheus.yml`` (with the alert rule
files, the checked-in ones and the ones generated from the stack spec) and
``alertmanager.yml``; for a multi-region stack also each node's
``cassandra-rackdc.properties`` and MirrorMaker 2's ``mm2.properties``. ``_components`` writes
them in each component's ``prepare`` step; only ``write_generated_rules`` touches the disk
itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from opsctl.local._config import HOST, LocalConfig, Ports, Site, SpecValues
from opsctl.local._exporters import exporter_scrape_configs, mirrormaker_scrape_config
from opsctl.spec import load_stack
from opsctl.stack._names import MIRRORED_TOPICS as MIRRORED_TOPIC_NAMES
from opsctl.stack._names import dispatcher_group


@dataclass(frozen=True)
class RedisSecurity:
    """TLS and ACL settings of one redis-server: its certificate, key and CA; the ACL users
    (name -> ``reset on #<sha256> <rules>``: the hash, never the password); a replica's login to its
    primary (that password is in the 0600 config, as Redis needs it in clear)."""

    cert: Path
    key: Path
    ca: Path
    users: dict[str, str]
    primary_login: tuple[str, str] | None = field(default=None, repr=False)


def render_redis_conf(
    port: int,
    data_dir: Path,
    *,
    maxmemory: str | None = None,
    maxmemory_policy: str | None = None,
    replica_of: int | None = None,
    security: RedisSecurity | None = None,
) -> str:
    limits = [f"maxmemory {maxmemory}"] if maxmemory else []
    if maxmemory_policy:
        limits.append(f"maxmemory-policy {maxmemory_policy}")
    # A replica follows the primary read-only; its maxmemory mirrors the primary's, as in prod.
    replication = [f"replicaof {HOST} {replica_of}", "replica-read-only yes"] if replica_of else []
    listen = [f"port {port}"]
    if security is not None:
        # TLS only: no plaintext port. Clients prove who they are with an ACL password, not a
        # client certificate; the default user is disabled.
        listen = [
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {security.cert}",
            f"tls-key-file {security.key}",
            f"tls-ca-cert-file {security.ca}",
            "tls-auth-clients no",
            "user default reset",
            *(f"user {name} {rule}" for name, rule in security.users.items()),
        ]
        if replica_of:
            listen.append("tls-replication yes")
            if security.primary_login:
                user, password = security.primary_login
                listen += [f"masteruser {user}", f"masterauth {password}"]
    return "\n".join(
        [
            *limits,
            *replication,
            f"bind {HOST}",
            *listen,
            "protected-mode yes",
            "daemonize no",
            # redis rewrites its process title over its environment: keep the (state dir)
            # config path in it so `down` can still recognise the process.
            'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
            'logfile ""',
            f"dir {data_dir}",
            # AOF so a restart keeps presence and sequence data; fsync once a second.
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            # Sync a (re)connecting replica at once, not after the default 5 s wait for others.
            "repl-diskless-sync-delay 0",
            "",
        ]
    )


# The stack's one Kafka node (broker and controller); an extra broker joins it
# (opsctl/local/_extra_broker.py).
KAFKA_NODE_ID = 1


def render_kafka_properties(config: LocalConfig, data_dir: Path, ports: Ports | None = None) -> str:
    """One KRaft node on ``ports`` (default: the config's; a multi-region stack passes each
    region's block)."""
    ports = ports or config.ports
    lines = {
        "process.roles": "broker,controller",
        "node.id": str(KAFKA_NODE_ID),
        "controller.quorum.voters": f"{KAFKA_NODE_ID}@{HOST}:{ports.kafka_controller}",
        "listeners": f"PLAINTEXT://{HOST}:{ports.kafka},CONTROLLER://{HOST}:{ports.kafka_controller}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{ports.kafka}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # Topics are created by `gateway.migrate` with the spec's partitions; no surprises.
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
        **config.kafka_overrides,
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


KAFKA_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.config.name = org.apache.kafka.common.config
logger.config.level = WARN
"""

CASSANDRA_LOGBACK = """\
<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
"""


def cassandra_token(index: int, nodes: int) -> int:
    """Node ``index``'s one token, spread evenly over the Murmur3 range."""
    return -(2**63) + index * (2**64 // nodes)


@dataclass(frozen=True)
class CassandraSecurity:
    """Password authentication and roles, and TLS on the client port with ``keystore`` (the
    server's key and certificate in one PEM, unencrypted: no keystore password)."""

    keystore: Path


def render_cassandra_yaml(
    config: LocalConfig,
    data_dir: Path,
    *,
    host: str = HOST,
    seeds: tuple[str, ...] = (HOST,),
    token: int = 0,
    security: CassandraSecurity | None = None,
) -> str:
    """One node on ``host``. A multi-region stack's nodes share the ports on their own
    loopback address, name every node a seed (any one restarts alone) and take their DC from
    ``cassandra-rackdc.properties`` (GossipingPropertyFileSnitch)."""
    ports = config.ports
    multi_dc = len(seeds) > 1
    document = {
        "cluster_name": "opsctl-local",
        # One token, fixed: no token allocation work on first start.
        "num_tokens": 1,
        "initial_token": token,
        "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
        "endpoint_snitch": "GossipingPropertyFileSnitch" if multi_dc else "SimpleSnitch",
        "seed_provider": [
            {
                "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                "parameters": [
                    {"seeds": ",".join(f"{seed}:{ports.cassandra_storage}" for seed in seeds)}
                ],
            }
        ],
        "listen_address": host,
        "rpc_address": host,
        "storage_port": ports.cassandra_storage,
        "native_transport_port": ports.cassandra,
        "start_native_transport": True,
        "data_file_directories": [str(data_dir / "data")],
        "commitlog_directory": str(data_dir / "commitlog"),
        "saved_caches_directory": str(data_dir / "saved_caches"),
        "hints_directory": str(data_dir / "hints"),
        "cdc_raw_directory": str(data_dir / "cdc_raw"),
        "commitlog_sync": "periodic",
        "commitlog_sync_period": "10000ms",
        "commitlog_segment_size": "8MiB",
        "memtable_heap_space": "128MiB",
        "memtable_offheap_space": "128MiB",
        "concurrent_reads": 8,
        "concurrent_writes": 8,
        "concurrent_counter_writes": 8,
        "auto_snapshot": False,
        "snapshot_before_compaction": False,
    }
    if multi_dc:
        # Every node is a seed and the cluster starts empty: nothing to stream on a join.
        document["auto_bootstrap"] = False
    if security is not None:
        # As the builders configure prod (opsctl/stack/_cassandra.py): roles with passwords
        # and permissions; the client port speaks TLS only (no client certificates: clients
        # prove who they are with their role's password).
        document["authenticator"] = "PasswordAuthenticator"
        document["authorizer"] = "CassandraAuthorizer"
        document["role_manager"] = "CassandraRoleManager"
        document["client_encryption_options"] = {
            "enabled": True,
            "optional": False,
            "ssl_context_factory": {
                "class_name": "org.apache.cassandra.security.PEMBasedSslContextFactory"
            },
            "keystore": str(security.keystore),
            "require_client_auth": False,
        }
    return yaml.safe_dump(document, sort_keys=False)


def render_cassandra_rackdc(datacenter: str) -> str:
    """GossipingPropertyFileSnitch's view of a node: its DC (the region) and rack."""
    return f"dc={datacenter}\nrack=rack1\n"


# The topics MirrorMaker 2 mirrors (a regex, matched against whole names): the messages, and
# the deliveries and events the relay reads (docs/multi-region.md sections 3 and 6).
MIRRORED_TOPICS = "|".join(topic.replace(".", r"\.") for topic in MIRRORED_TOPIC_NAMES)


def render_mirrormaker_properties(clusters: list[tuple[str, str]], *, interval_s: int = 5) -> str:
    """MirrorMaker 2, dedicated mode: every cluster mirrors to every other.

    ``clusters`` is (alias = region, bootstrap) in spec order. DefaultReplicationPolicy, so
    topics arrive as ``<source>.im.messages``; checkpoints are emitted, group offsets are not
    synced (each region's dispatcher group is its own, docs/multi-region.md section 3); every
    internal topic has replication factor 1 (one broker per region).
    """
    aliases = [alias for alias, _ in clusters]
    lines: dict[str, str] = {"clusters": ", ".join(aliases)}
    for alias, bootstrap in clusters:
        lines[f"{alias}.bootstrap.servers"] = bootstrap
        # Each herder's worker reads its target cluster's settings: plugins from their
        # ServiceLoader manifests, no classpath scan (about 10 s less per herder).
        lines[f"{alias}.plugin.discovery"] = "service_load"
        # Connect's default (5 min) leaves the worker of a region that was frozen without tasks
        # until the delay expires: MirrorMaker stalled after a region-down drill.
        lines[f"{alias}.scheduled.rebalance.max.delay.ms"] = "0"
    for source in aliases:
        for target in aliases:
            if source != target:
                lines[f"{source}->{target}.enabled"] = "true"
                # Checkpoints of the source's own dispatcher group only, as the builders do.
                group = dispatcher_group(source).replace(".", r"\.")
                lines[f"{source}->{target}.groups"] = group
    lines.update(
        {
            "topics": MIRRORED_TOPICS,
            "replication.policy.class": (
                "org.apache.kafka.connect.mirror.DefaultReplicationPolicy"
            ),
            "replication.policy.separator": ".",
            "emit.checkpoints.enabled": "true",
            "emit.checkpoints.interval.seconds": str(interval_s),
            "emit.heartbeats.enabled": "true",
            "emit.heartbeats.interval.seconds": str(interval_s),
            "sync.group.offsets.enabled": "false",
            "sync.topic.acls.enabled": "false",
            "refresh.topics.interval.seconds": str(interval_s),
            "refresh.groups.interval.seconds": str(interval_s),
            "tasks.max": "1",
            "plugin.discovery": "service_load",
            "replication.factor": "1",
            "checkpoints.topic.replication.factor": "1",
            "heartbeats.topic.replication.factor": "1",
            "offset-syncs.topic.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "status.storage.replication.factor": "1",
            "config.storage.replication.factor": "1",
            # Flush source offsets often, so a restart replays little (duplicates are absorbed
            # by message_seqs, docs/multi-region.md section 5.2).
            "offset.flush.interval.ms": "2000",
        }
    )
    # java.util.Properties drops a backslash before an ordinary character: "im\.messages" would
    # reach the regex as "im.messages" (any character), so write regex escapes doubled.
    return "".join(
        f"{key} = {value.replace(chr(92), chr(92) * 2)}\n" for key, value in lines.items()
    )


MIRRORMAKER_LOG4J2 = (
    KAFKA_LOG4J2
    + """\
logger.connect.name = org.apache.kafka.connect
logger.connect.level = INFO
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
"""
)


def write_generated_rules(config: LocalConfig, directory: Path) -> None:
    """The rules generated from the stack spec (SLO burn rates), as the clusters get them."""
    from opsctl.alerts import slo_rules

    for stale in directory.glob("*.yaml"):
        stale.unlink()
    slo_rules(load_stack(config.infra_dir, config.spec_stack)).write(directory)


def rule_file_patterns(config: LocalConfig) -> list[str]:
    """The alert rule globs, absolute (Prometheus expands them; no match is fine)."""
    patterns = []
    for pattern in config.rule_globs:
        path = Path(pattern)
        patterns.append(str(path if path.is_absolute() else config.repo_root / path))
    return patterns


def render_prometheus_yml(
    config: LocalConfig,
    spec: SpecValues,
    generated_rules: Path | None = None,
    sites: list[Site] | None = None,
) -> str:
    """One Prometheus for the whole stack; every target carries its ``region`` label (a
    multi-region stack passes its sites: each region's IM processes and exporters, the
    witness's Cassandra node, MirrorMaker 2)."""
    ports = config.ports
    interval = f"{config.scrape_interval_s}s"
    labels = {"region": spec.region, "stack": config.spec_stack}
    regions = [site for site in sites or [] if not site.witness] or [
        Site(spec.region, ports, ports)
    ]
    gateway_targets = [
        {
            "targets": [f"{HOST}:{site.ports.gateway(i)}"],
            "labels": {**labels, "region": site.region, "node": node},
        }
        for site in regions
        for i, node in enumerate(config.gateway_ids)
    ]
    dispatcher_targets = [
        {
            "targets": [f"{HOST}:{site.ports.dispatcher}"],
            "labels": {**labels, "region": site.region, "node": "dispatcher-1"},
        }
        for site in regions
    ]
    relay_targets = [
        {
            "targets": [f"{HOST}:{site.ports.relay}"],
            "labels": {**labels, "region": site.region, "node": "relay-1"},
        }
        for site in regions
    ]
    multi = spec.multi_region
    relays = [{"job_name": "im-relay", "static_configs": relay_targets}] if multi else []
    mirror = [mirrormaker_scrape_config(config, labels)] if multi and config.exporters else []
    document = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [
            *rule_file_patterns(config),
            *([str(generated_rules / "*.yaml")] if generated_rules else []),
        ],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{ports.alertmanager}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"{HOST}:{ports.prometheus}"], "labels": labels}],
            },
            {
                "job_name": "alertmanager",
                "static_configs": [{"targets": [f"{HOST}:{ports.alertmanager}"], "labels": labels}],
            },
            # Job names are the ones the alert rules and dashboards select on.
            {"job_name": "im-gateway", "static_configs": gateway_targets},
            {"job_name": "im-dispatcher", "static_configs": dispatcher_targets},
            *relays,
            *exporter_scrape_configs(config, labels, sites),
            *mirror,
        ],
    }
    return yaml.safe_dump(document, sort_keys=False)


def render_alertmanager_yml(webhook_url: str) -> str:
    document = {
        "route": {
            "receiver": "local-webhook",
            "group_by": ["alertname", "region"],
            "group_wait": "1s",
            "group_interval": "2s",
            "repeat_interval": "1h",
        },
        # Nothing has to listen there; tests that want the notifications listen themselves.
        "receivers": [
            {
                "name": "local-webhook",
                "webhook_configs": [{"url": webhook_url, "send_resolved": True}],
            }
        ],
    }
    return yaml.safe_dump(document, sort_keys=False)
