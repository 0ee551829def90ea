"""What the local stack runs: one Component per process, built from the config and the spec.

A component is a command line, an environment, a port, a health check and an optional
``prepare`` step (write its config files, format its storage). When each starts and stops is
named once here: ``Phase`` (start order) and ``StopGroup`` (stop order). The config files
come from ``_render``, the JVM command lines from ``_jvm`` (layout: ``opsctl/local/__init__``).
"""

from __future__ import annotations

import base64
import os
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from opsctl.local._config import HOST, LocalConfig, SpecValues
from opsctl.local._exporters import (
    RedisReplicaCheck,
    exporter_http_check,
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
from opsctl.local._jvm import (
    CASSANDRA_FAST_START_FLAGS,
    CASSANDRA_JAVA17_FLAGS,
    jar_dir,
    java_command,
)
from opsctl.local._render import (
    CASSANDRA_LOGBACK,
    KAFKA_LOG4J2,
    render_alertmanager_yml,
    render_cassandra_yaml,
    render_kafka_properties,
    render_prometheus_yml,
    render_redis_conf,
    write_generated_rules,
)

SECRET_FILE = "secrets/jwt-hs256.key"


class Phase(IntEnum):
    """Start order: every component of a phase is healthy before the next phase starts."""

    INFRA = 0  # stores, brokers, exporters and monitoring
    IM = 1  # migrations run first, then the dispatcher and the gateways


class StopGroup(IntEnum):
    """Stop order: ``down`` stops the groups in this order, the members of one in parallel.

    What uses something stops before it: the gateways drain their clients first, Redis goes
    last because every other group talks to it.
    """

    GATEWAYS = 0
    DISPATCHER = 1
    # Exporters, kube-state-metrics, Alertmanager and Prometheus: before what they scrape, so
    # they log no spurious connection errors.
    MONITORING = 2
    JVM_STORES = 3  # Kafka and Cassandra
    REDIS = 4  # the primary and its replica


@dataclass(frozen=True)
class Component:
    name: str
    phase: Phase
    argv: list[str]
    port: int
    health: HealthCheck
    endpoint: str
    start_timeout_s: float
    stop_timeout_s: float
    stop_group: StopGroup
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
        # Names the dispatcher's consumer group (im-dispatcher.<region>), as the chart does.
        "IMGW_REGION": spec.region,
    }


# ---- the components ---------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


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
    port = config.ports.redis
    return _redis_server(config, layout, "redis", port, RedisPing(HOST, port))


def _redis_replica(config: LocalConfig, layout: Layout) -> Component:
    port = config.ports.redis_replica
    health = RedisReplicaCheck(HOST, port)
    return _redis_server(
        config, layout, "redis-replica", port, health, replica_of=config.ports.redis
    )


def _redis_server(
    config: LocalConfig,
    layout: Layout,
    name: str,
    port: int,
    health: HealthCheck,
    *,
    replica_of: int | None = None,
) -> Component:
    """The primary and its replica: one redis-server each, stopped last (every group uses it)."""
    conf = layout.conf(name) / "redis.conf"

    def prepare() -> None:
        layout.data(name).mkdir(parents=True, exist_ok=True)
        rendered = render_redis_conf(
            port,
            layout.data(name),
            maxmemory=config.redis_maxmemory,
            maxmemory_policy=config.redis_maxmemory_policy,
            replica_of=replica_of,
        )
        _write(conf, rendered)

    return Component(
        name=name,
        phase=Phase.INFRA,
        argv=[str(config.redis_server), str(conf)],
        port=port,
        health=health,
        endpoint=f"redis://{HOST}:{port}/0",
        start_timeout_s=20,
        stop_timeout_s=15,
        stop_group=StopGroup.REDIS,
        prepare=prepare,
    )


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
        phase=Phase.INFRA,
        argv=argv,
        port=port,
        health=health,
        endpoint=f"{HOST}:{port}",
        start_timeout_s=start_timeout_s,
        stop_timeout_s=stop_timeout_s,
        stop_group=StopGroup.JVM_STORES,
        prepare=prepare,
    )


def _kafka(config: LocalConfig, layout: Layout) -> Component:
    conf_dir = layout.conf("kafka")
    properties = conf_dir / "server.properties"
    log4j = conf_dir / "log4j2.properties"
    data = layout.data("kafka")
    classpath = str(jar_dir(config, "kafka") / "*")
    jvm = [
        *java_command(config, config.kafka_heap, ["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]),
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
        *java_command(config, config.cassandra_heap, tuning),
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


def _redis_exporter(config: LocalConfig, name: str, redis_port: int, port: int) -> Component:
    return Component(
        name=name,
        phase=Phase.INFRA,
        argv=redis_exporter_argv(config, redis_port, port),
        port=port,
        health=exporter_http_check(port),
        endpoint=f"http://{HOST}:{port}/metrics",
        start_timeout_s=20,
        stop_timeout_s=10,
        stop_group=StopGroup.MONITORING,
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
        phase=Phase.INFRA,
        argv=kube_state_metrics_argv(config, kubeconfig),
        port=port,
        # Ready once its stores have listed the cluster (served on the telemetry port).
        health=HttpCheck(HOST, config.ports.kube_state_metrics_telemetry, "/readyz"),
        endpoint=f"http://{HOST}:{port}/metrics",
        start_timeout_s=60,
        stop_timeout_s=10,
        stop_group=StopGroup.MONITORING,
        prepare=prepare,
    )


def _prometheus_server(
    name: str, port: int, argv: list[str], prepare: Callable[[], None]
) -> Component:
    """Prometheus and Alertmanager: ready on ``/-/ready``, part of the monitoring stop group."""
    return Component(
        name=name,
        phase=Phase.INFRA,
        argv=argv,
        port=port,
        health=HttpCheck(HOST, port, "/-/ready"),
        endpoint=f"http://{HOST}:{port}",
        start_timeout_s=30,
        stop_timeout_s=15,
        stop_group=StopGroup.MONITORING,
        prepare=prepare,
    )


def _alertmanager(config: LocalConfig, layout: Layout) -> Component:
    conf = layout.conf("alertmanager") / "alertmanager.yml"
    port = config.ports.alertmanager
    webhook = alert_webhook_url(config)

    def prepare() -> None:
        layout.data("alertmanager").mkdir(parents=True, exist_ok=True)
        _write(conf, render_alertmanager_yml(webhook))

    return _prometheus_server(
        "alertmanager",
        port,
        [
            str(config.alertmanager),
            f"--config.file={conf}",
            f"--storage.path={layout.data('alertmanager')}",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",  # a single instance: no gossip port, no peers
            "--log.level=info",
        ],
        prepare,
    )


def _prometheus(config: LocalConfig, layout: Layout, spec: SpecValues) -> Component:
    conf = layout.conf("prometheus") / "prometheus.yml"
    generated = layout.conf("prometheus") / "generated-rules"
    port = config.ports.prometheus

    def prepare() -> None:
        layout.data("prometheus").mkdir(parents=True, exist_ok=True)
        write_generated_rules(config, generated)
        _write(conf, render_prometheus_yml(config, spec, generated))

    return _prometheus_server(
        "prometheus",
        port,
        [
            str(config.prometheus),
            f"--config.file={conf}",
            f"--storage.tsdb.path={layout.data('prometheus')}",
            f"--storage.tsdb.retention.time={spec.retention}",
            f"--web.listen-address={HOST}:{port}",
            "--web.enable-lifecycle",  # POST /-/reload after editing rules
        ],
        prepare,
    )


def im_components(config: LocalConfig, spec: SpecValues, layout: Layout) -> list[Component]:
    shared = imgw_env(config, spec, layout)
    python = str(config.python)
    stop_timeout = config.drain_window_s + 8  # the contract: drained before drain window + 5 s
    dispatcher = Component(
        name="dispatcher",
        phase=Phase.IM,
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
        stop_group=StopGroup.DISPATCHER,
    )
    gateways = [
        Component(
            name=node,
            phase=Phase.IM,
            argv=[python, "-m", "gateway.server"],
            env={**shared, "IMGW_NODE_ID": node, "IMGW_LISTEN_PORT": str(config.ports.gateway(i))},
            cwd=config.repo_root,
            port=config.ports.gateway(i),
            health=HttpCheck(HOST, config.ports.gateway(i), "/readyz"),
            endpoint=f"ws://{HOST}:{config.ports.gateway(i)}/ws",
            start_timeout_s=60,
            stop_timeout_s=stop_timeout,
            stop_group=StopGroup.GATEWAYS,
        )
        for i, node in enumerate(config.gateway_ids)
    ]
    return [dispatcher, *gateways]


def alert_webhook_url(config: LocalConfig) -> str:
    return f"http://{HOST}:{config.ports.alert_webhook}/alerts"


def migrate_argv(config: LocalConfig) -> list[str]:
    return [str(config.python), "-m", "gateway.migrate"]
