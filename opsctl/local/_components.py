"""What the local stack runs: one Component per process, built from the config and the spec.

A component is a command line, an environment, a port, a health check and an optional
``prepare`` step (write its config files, format its storage). Config files are rendered by
small pure functions, so they are unit-tested without starting anything.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shlex
import signal
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from opsctl.local._config import LocalConfig, jvm_versions
from opsctl.local._errors import ArtifactMissing, ComponentFailed
from opsctl.local._exporters import (
    RedisReplicaCheck,
    exporter_http_check,
    exporter_scrape_configs,
    jmx_agent_flags,
    kube_state_metrics_argv,
    redis_exporter_argv,
    render_ksm_kubeconfig,
)
from opsctl.local._health import (
    CqlCheck,
    HealthCheck,
    HttpCheck,
    KafkaMetadataCheck,
    RedisPing,
)
from opsctl.local._procs import read_tail
from opsctl.spec import StackSpec, load_stack

HOST = "127.0.0.1"
INFRA_PHASE = 0
IM_PHASE = 1
LOG_TAIL_LINES = 20
SECRET_FILE = "secrets/jwt-hs256.key"

# What Cassandra 5 needs on Java 17 (module access for its off-heap, reflection and
# instrumentation tricks); mirrors the jvm17-server.options its distribution ships.
CASSANDRA_JAVA17_FLAGS = [
    "-Djdk.attach.allowAttachSelf=true",
    *(
        f"--add-exports={spec}=ALL-UNNAMED"
        for spec in (
            "java.base/jdk.internal.misc",
            "java.base/jdk.internal.ref",
            "java.base/sun.nio.ch",
            "java.management.rmi/com.sun.jmx.remote.internal.rmi",
            "java.rmi/sun.rmi.registry",
            "java.rmi/sun.rmi.server",
            "java.sql/java.sql",
            "java.base/java.lang.ref",
            "jdk.unsupported/sun.misc",
        )
    ),
    *(
        f"--add-opens={spec}=ALL-UNNAMED"
        for spec in (
            "java.base/java.lang.module",
            "java.base/jdk.internal.loader",
            "java.base/jdk.internal.ref",
            "java.base/jdk.internal.reflect",
            "java.base/jdk.internal.math",
            "java.base/jdk.internal.module",
            "java.base/jdk.internal.util.jar",
            "jdk.management/com.sun.management.internal",
            "java.base/sun.nio.ch",
            "java.base/java.io",
            "java.base/java.nio",
            "java.base/java.util.concurrent",
            "java.base/java.util.concurrent.atomic",
            "java.base/java.util",
            "java.base/java.lang",
            "java.base/java.math",
            "java.base/java.lang.reflect",
            "java.base/java.net",
        )
    ),
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]

# Start fast on one node: no waiting for gossip to settle, no ring delay, no fsync of system
# tables, no paxos rebuild. Fine for a throw-away local node, never for production.
CASSANDRA_FAST_START_FLAGS = [
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=0",
    "-Dcassandra.unsafesystem=true",
    "-Dcassandra.skip_paxos_state_rebuild=true",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.shutdown_announce_in_ms=0",
    # Estimating memtable row overhead inserts 100 000 rows at start by default.
    "-Dcassandra.memtable_row_overhead_computation_step=100",
]
# C1-only JIT: JVMs reach "serving" much sooner and leave CPU to the others on a small machine,
# at some cost in peak throughput (LocalConfig.jvm_quick_start turns it off).
JVM_QUICK_START_FLAGS = ["-XX:TieredStopAtLevel=1"]


@dataclass(frozen=True)
class SpecValues:
    """What the local stack takes from the `local` stack spec (the one source of truth)."""

    region: str
    kafka_partitions: int
    kafka_replication_factor: int
    cassandra_replication_factor: int
    retention: str

    @classmethod
    def from_spec(cls, spec: StackSpec) -> SpecValues:
        region = spec.regions[0]
        return cls(
            region=region.name,
            kafka_partitions=region.kafka.message_partitions,
            kafka_replication_factor=region.kafka.replication_factor,
            cassandra_replication_factor=region.cassandra.replication_factor,
            retention=region.monitoring.retention,
        )


@dataclass(frozen=True)
class Component:
    name: str
    phase: int
    argv: list[str]
    port: int
    health: HealthCheck
    endpoint: str
    start_timeout_s: float
    stop_timeout_s: float
    # `down` stops groups from the highest to the lowest, the members of a group in parallel.
    stop_group: int
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    # Writes config files just before a start; may return a replacement command line
    # (Kafka's first start formats its storage first, in the same process group).
    prepare: Callable[[], list[str] | None] | None = None


class Layout:
    """Where everything lives under the state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir

    def conf(self, name: str) -> Path:
        return self.root / name / "conf"

    def data(self, name: str) -> Path:
        return self.root / name / "data"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def pid(self, name: str) -> Path:
        return self.root / "run" / f"{name}.pid"

    @property
    def secret(self) -> Path:
        return self.root / SECRET_FILE


def base_env() -> dict[str, str]:
    """The parent's environment without IMGW_* (the stack sets those itself)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMGW_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def imgw_env(config: LocalConfig, spec: SpecValues, layout: Layout) -> dict[str, str]:
    """IMGW_* settings shared by migrate, the dispatcher and every gateway (see the contract)."""
    ports = config.ports
    return {
        "IMGW_LISTEN_HOST": HOST,
        "IMGW_KAFKA_BOOTSTRAP": f"{HOST}:{ports.kafka}",
        "IMGW_KAFKA_TOPIC": config.kafka_topic,
        "IMGW_KAFKA_PARTITIONS": str(spec.kafka_partitions),
        "IMGW_KAFKA_REPLICATION_FACTOR": str(spec.kafka_replication_factor),
        "IMGW_REDIS_URL": f"redis://{HOST}:{ports.redis}/0",
        "IMGW_CASSANDRA_HOSTS": f"{HOST}:{ports.cassandra}",
        "IMGW_CASSANDRA_KEYSPACE": config.cassandra_keyspace,
        "IMGW_CASSANDRA_REPLICATION_FACTOR": str(spec.cassandra_replication_factor),
        "IMGW_JWT_HS256_SECRET_FILE": str(layout.secret),
        "IMGW_JWT_ISSUER": config.jwt_issuer,
        "IMGW_JWT_AUDIENCE": config.jwt_audience,
        "IMGW_DRAIN_WINDOW_S": str(config.drain_window_s),
    }


# ---- config file rendering (pure) ----------------------------------------------------------


def render_redis_conf(
    port: int,
    data_dir: Path,
    *,
    maxmemory: str | None = None,
    maxmemory_policy: str | None = None,
    replica_of: int | None = None,
) -> str:
    limits = [f"maxmemory {maxmemory}"] if maxmemory else []
    if maxmemory_policy:
        limits.append(f"maxmemory-policy {maxmemory_policy}")
    # A replica follows the primary read-only; its maxmemory mirrors the primary's, as in prod.
    replication = [f"replicaof {HOST} {replica_of}", "replica-read-only yes"] if replica_of else []
    return "\n".join(
        [
            *limits,
            *replication,
            f"bind {HOST}",
            f"port {port}",
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


def render_kafka_properties(config: LocalConfig, data_dir: Path) -> str:
    ports = config.ports
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{ports.kafka_controller}",
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


def render_cassandra_yaml(config: LocalConfig, data_dir: Path) -> str:
    ports = config.ports
    document = {
        "cluster_name": "opsctl-local",
        # One token, fixed: no token allocation work on first start.
        "num_tokens": 1,
        "initial_token": 0,
        "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
        "endpoint_snitch": "SimpleSnitch",
        "seed_provider": [
            {
                "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                "parameters": [{"seeds": f"{HOST}:{ports.cassandra_storage}"}],
            }
        ],
        "listen_address": HOST,
        "rpc_address": HOST,
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
    return yaml.safe_dump(document, sort_keys=False)


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
    config: LocalConfig, spec: SpecValues, generated_rules: Path | None = None
) -> str:
    ports = config.ports
    interval = f"{config.scrape_interval_s}s"
    labels = {"region": spec.region, "stack": "local"}
    gateway_targets = [
        {"targets": [f"{HOST}:{ports.gateway(i)}"], "labels": {**labels, "node": node}}
        for i, node in enumerate(config.gateway_ids)
    ]
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
            {
                "job_name": "im-dispatcher",
                "static_configs": [
                    {
                        "targets": [f"{HOST}:{ports.dispatcher}"],
                        "labels": {**labels, "node": "dispatcher-1"},
                    }
                ],
            },
            *exporter_scrape_configs(config, labels),
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


# ---- the components ---------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def jar_dir(config: LocalConfig, name: str) -> Path:
    """Where scripts/setup/jars.sh put ``name``'s jars (``kafka`` or ``cassandra``)."""
    version = jvm_versions()[f"{name.upper()}_VERSION"]
    return config.cache_dir / "jars" / f"{name}-{version}"


def check_jars(config: LocalConfig) -> None:
    for name in ("kafka", "cassandra"):
        path = jar_dir(config, name)
        if not (path / ".complete").is_file():
            raise ArtifactMissing(
                f"the {name} jars are not in the cache ({path})",
                hint="run `make setup` (scripts/setup/jars.sh fetches them from Maven Central)",
            )


def kafka_cluster_id(state_file: Path) -> str:
    """The cluster id, generated once per state dir (Kafka's format: 16 bytes, base64url)."""
    if state_file.is_file():
        return state_file.read_text(encoding="utf-8").strip()
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    _write(state_file, cluster_id + "\n")
    return cluster_id


def build_components(config: LocalConfig, spec: SpecValues) -> list[Component]:
    """Every component in start order (phase, then list order)."""
    layout = Layout(config.state_dir)
    components = [
        _redis(config, layout),
        _cassandra(config, layout),  # the slowest starts first
        _kafka(config, layout),
    ]
    if config.exporters:
        components += [
            _redis_replica(config, layout),
            _redis_exporter(
                config, "redis-exporter", config.ports.redis, config.ports.redis_exporter
            ),
            _redis_exporter(
                config,
                "redis-replica-exporter",
                config.ports.redis_replica,
                config.ports.redis_replica_exporter,
            ),
        ]
    if config.watches_cluster:
        components.append(_kube_state_metrics(config, layout))
    components += [_alertmanager(config, layout), _prometheus(config, layout, spec)]
    if config.im:
        components += im_components(config, spec, layout)
    return components


def _redis(config: LocalConfig, layout: Layout) -> Component:
    conf = layout.conf("redis") / "redis.conf"
    port = config.ports.redis

    def prepare() -> None:
        layout.data("redis").mkdir(parents=True, exist_ok=True)
        rendered = render_redis_conf(
            port,
            layout.data("redis"),
            maxmemory=config.redis_maxmemory,
            maxmemory_policy=config.redis_maxmemory_policy,
        )
        _write(conf, rendered)

    return Component(
        name="redis",
        phase=INFRA_PHASE,
        argv=[str(config.redis_server), str(conf)],
        port=port,
        health=RedisPing(HOST, port),
        endpoint=f"redis://{HOST}:{port}/0",
        start_timeout_s=20,
        stop_timeout_s=15,
        stop_group=0,
        prepare=prepare,
    )


def _java(config: LocalConfig, heap: str, tuning: list[str]) -> list[str]:
    """The start of a JVM service's command line: java, its heap, GC tuning, exit on OOM."""
    return [
        str(config.java),
        "-Xms256m",  # a small initial heap: Cassandra mlockall()s what is committed at start
        f"-Xmx{heap}",
        *tuning,
        *(JVM_QUICK_START_FLAGS if config.jvm_quick_start else []),
        "-XX:+ExitOnOutOfMemoryError",
    ]


def _jvm_service(
    name: str,
    argv: list[str],
    port: int,
    health: HealthCheck,
    *,
    start_timeout_s: float,
    stop_timeout_s: float,
    prepare: Callable[[], list[str] | None],
) -> Component:
    """Kafka and Cassandra: infrastructure on HOST:port, stopped after the services using them."""
    return Component(
        name=name,
        phase=INFRA_PHASE,
        argv=argv,
        port=port,
        health=health,
        endpoint=f"{HOST}:{port}",
        start_timeout_s=start_timeout_s,
        stop_timeout_s=stop_timeout_s,
        stop_group=1,
        prepare=prepare,
    )


def _kafka(config: LocalConfig, layout: Layout) -> Component:
    conf_dir = layout.conf("kafka")
    properties = conf_dir / "server.properties"
    log4j = conf_dir / "log4j2.properties"
    data = layout.data("kafka")
    classpath = str(jar_dir(config, "kafka") / "*")
    jvm = [
        *_java(config, config.kafka_heap, ["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]),
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        classpath,
    ]

    agent = jmx_agent_flags(config, "kafka", config.ports.kafka_metrics)
    # The agent only on the broker: the format step would otherwise bind its port too.
    run = [*jvm, *agent, "kafka.Kafka", str(properties)]

    def prepare() -> list[str] | None:
        _write(properties, render_kafka_properties(config, data))
        _write(log4j, KAFKA_LOG4J2)
        if (data / "meta.properties").is_file():
            return None
        # First start: the equivalent of `kafka-storage format` for a single KRaft node, then
        # the broker, as one command so both run while the other components start.
        cluster_id = kafka_cluster_id(config.state_dir / "kafka" / "cluster-id")
        fmt = [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)]
        return ["/bin/sh", "-c", f"{shlex.join(fmt)} && exec {shlex.join(run)}"]

    port = config.ports.kafka
    return _jvm_service(
        "kafka",
        run,
        port,
        KafkaMetadataCheck(HOST, port),
        start_timeout_s=120,
        stop_timeout_s=30,
        prepare=prepare,
    )


def _cassandra(config: LocalConfig, layout: Layout) -> Component:
    conf_dir = layout.conf("cassandra")
    cassandra_yaml = conf_dir / "cassandra.yaml"
    logback = conf_dir / "logback.xml"
    data = layout.data("cassandra")
    jars = jar_dir(config, "cassandra")
    jamm = sorted(jars.glob("jamm-*.jar"))
    tuning = [
        "-Xss512k",
        "-XX:+UseG1GC",
        "-XX:+ParallelRefProcEnabled",
        "-XX:MaxTenuringThreshold=1",
    ]
    argv = [
        *_java(config, config.cassandra_heap, tuning),
        *CASSANDRA_JAVA17_FLAGS,
        *(f"-javaagent:{jar}" for jar in jamm[:1]),
        *jmx_agent_flags(config, "cassandra", config.ports.cassandra_metrics),
        "-Dcassandra-foreground=yes",
        f"-Dcassandra.config={cassandra_yaml.as_uri()}",
        f"-Dlogback.configurationFile={logback}",
        f"-Dcassandra.logdir={config.state_dir / 'logs'}",
        f"-Dcassandra.storagedir={data}",
        *CASSANDRA_FAST_START_FLAGS,
        "-cp",
        str(jars / "*"),
        "org.apache.cassandra.service.CassandraDaemon",
    ]

    def prepare() -> None:
        data.mkdir(parents=True, exist_ok=True)
        _write(cassandra_yaml, render_cassandra_yaml(config, data))
        _write(logback, CASSANDRA_LOGBACK)

    port = config.ports.cassandra
    return _jvm_service(
        "cassandra",
        argv,
        port,
        CqlCheck(HOST, port),
        start_timeout_s=180,
        stop_timeout_s=40,
        prepare=prepare,
    )


def _redis_replica(config: LocalConfig, layout: Layout) -> Component:
    name = "redis-replica"
    conf = layout.conf(name) / "redis.conf"
    port = config.ports.redis_replica

    def prepare() -> None:
        layout.data(name).mkdir(parents=True, exist_ok=True)
        rendered = render_redis_conf(
            port,
            layout.data(name),
            maxmemory=config.redis_maxmemory,
            maxmemory_policy=config.redis_maxmemory_policy,
            replica_of=config.ports.redis,
        )
        _write(conf, rendered)

    return Component(
        name=name,
        phase=INFRA_PHASE,
        argv=[str(config.redis_server), str(conf)],
        port=port,
        health=RedisReplicaCheck(HOST, port),
        endpoint=f"redis://{HOST}:{port}/0",
        start_timeout_s=20,
        stop_timeout_s=15,
        stop_group=0,
        prepare=prepare,
    )


def _redis_exporter(config: LocalConfig, name: str, redis_port: int, port: int) -> Component:
    return Component(
        name=name,
        phase=INFRA_PHASE,
        argv=redis_exporter_argv(config, redis_port, port),
        port=port,
        health=exporter_http_check(port),
        endpoint=f"http://{HOST}:{port}/metrics",
        start_timeout_s=20,
        stop_timeout_s=10,
        stop_group=2,  # before Redis, so it logs no spurious connection errors
    )


def _kube_state_metrics(config: LocalConfig, layout: Layout) -> Component:
    assert config.kubeconfig is not None  # only built when a cluster is attached
    source, context = config.kubeconfig, config.kube_context
    kubeconfig = layout.conf("kube-state-metrics") / "kubeconfig"
    port = config.ports.kube_state_metrics

    def prepare() -> None:
        _write(kubeconfig, render_ksm_kubeconfig(source, context))
        kubeconfig.chmod(0o600)  # it may hold client keys

    return Component(
        name="kube-state-metrics",
        phase=INFRA_PHASE,
        argv=kube_state_metrics_argv(config, kubeconfig),
        port=port,
        # Ready once its stores have listed the cluster (served on the telemetry port).
        health=HttpCheck(HOST, config.ports.kube_state_metrics_telemetry, "/readyz"),
        endpoint=f"http://{HOST}:{port}/metrics",
        start_timeout_s=60,
        stop_timeout_s=10,
        stop_group=2,
        prepare=prepare,
    )


def _alertmanager(config: LocalConfig, layout: Layout) -> Component:
    conf = layout.conf("alertmanager") / "alertmanager.yml"
    port = config.ports.alertmanager
    webhook = alert_webhook_url(config)

    def prepare() -> None:
        layout.data("alertmanager").mkdir(parents=True, exist_ok=True)
        _write(conf, render_alertmanager_yml(webhook))

    return Component(
        name="alertmanager",
        phase=INFRA_PHASE,
        argv=[
            str(config.alertmanager),
            f"--config.file={conf}",
            f"--storage.path={layout.data('alertmanager')}",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",  # a single instance: no gossip port, no peers
            "--log.level=info",
        ],
        port=port,
        health=HttpCheck(HOST, port, "/-/ready"),
        endpoint=f"http://{HOST}:{port}",
        start_timeout_s=30,
        stop_timeout_s=15,
        stop_group=2,
        prepare=prepare,
    )


def _prometheus(config: LocalConfig, layout: Layout, spec: SpecValues) -> Component:
    conf = layout.conf("prometheus") / "prometheus.yml"
    generated = layout.conf("prometheus") / "generated-rules"
    port = config.ports.prometheus

    def prepare() -> None:
        layout.data("prometheus").mkdir(parents=True, exist_ok=True)
        write_generated_rules(config, generated)
        _write(conf, render_prometheus_yml(config, spec, generated))

    return Component(
        name="prometheus",
        phase=INFRA_PHASE,
        argv=[
            str(config.prometheus),
            f"--config.file={conf}",
            f"--storage.tsdb.path={layout.data('prometheus')}",
            f"--storage.tsdb.retention.time={spec.retention}",
            f"--web.listen-address={HOST}:{port}",
            "--web.enable-lifecycle",  # POST /-/reload after editing rules
        ],
        port=port,
        health=HttpCheck(HOST, port, "/-/ready"),
        endpoint=f"http://{HOST}:{port}",
        start_timeout_s=30,
        stop_timeout_s=15,
        stop_group=2,
        prepare=prepare,
    )


def im_components(config: LocalConfig, spec: SpecValues, layout: Layout) -> list[Component]:
    shared = imgw_env(config, spec, layout)
    python = str(config.python)
    stop_timeout = config.drain_window_s + 8  # the contract: drained before drain window + 5 s
    dispatcher = Component(
        name="dispatcher",
        phase=IM_PHASE,
        argv=[python, "-m", "gateway.dispatcher"],
        env={
            **shared,
            "IMGW_NODE_ID": "dispatcher-1",
            "IMGW_LISTEN_PORT": str(config.ports.dispatcher),
        },
        cwd=config.repo_root,
        port=config.ports.dispatcher,
        health=HttpCheck(HOST, config.ports.dispatcher, "/readyz"),
        endpoint=f"http://{HOST}:{config.ports.dispatcher}",
        start_timeout_s=60,
        stop_timeout_s=stop_timeout,
        stop_group=3,
    )
    gateways = [
        Component(
            name=node,
            phase=IM_PHASE,
            argv=[python, "-m", "gateway.server"],
            env={**shared, "IMGW_NODE_ID": node, "IMGW_LISTEN_PORT": str(config.ports.gateway(i))},
            cwd=config.repo_root,
            port=config.ports.gateway(i),
            health=HttpCheck(HOST, config.ports.gateway(i), "/readyz"),
            endpoint=f"ws://{HOST}:{config.ports.gateway(i)}/ws",
            start_timeout_s=60,
            stop_timeout_s=stop_timeout,
            stop_group=4,
        )
        for i, node in enumerate(config.gateway_ids)
    ]
    return [dispatcher, *gateways]


def alert_webhook_url(config: LocalConfig) -> str:
    return f"http://{HOST}:{config.ports.alert_webhook}/alerts"


def migrate_argv(config: LocalConfig) -> list[str]:
    return [str(config.python), "-m", "gateway.migrate"]


def run_once(
    component: str,
    argv: list[str],
    log_file: Path,
    *,
    timeout_s: float,
    env: dict[str, str],
    cwd: Path | None = None,
) -> None:
    """Run a one-shot step (storage format, migrations), output appended to ``log_file``.

    Raises ComponentFailed with the tail of this run's output when it fails or times out.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        log.write(f"==== opsctl local: running {' '.join(argv)}\n".encode())
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout_s)
            reason = f"`{' '.join(argv[-3:])}` exited with {code}"
            failed = code != 0
        except subprocess.TimeoutExpired:
            # The step runs in its own session: kill the whole group, not just the leader.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reason, failed = f"`{' '.join(argv[-3:])}` did not finish within {timeout_s:.0f}s", True
    if failed:
        tail = read_tail(log_file, LOG_TAIL_LINES, offset)
        raise ComponentFailed(component, reason, str(log_file), tail)
