"""What the local stack runs: one Component per process, built from the config and the spec.

A component is a command line, an environment, a port, a health check and an optional
``prepare`` step (write its config files, format its storage). When each starts and stops is
named once here: ``Phase`` and ``wave`` (start order) and ``StopGroup`` (stop order). The config
files come from ``_render``, the JVM command lines from ``_jvm`` (layout:
``opsctl/local/__init__``).

A multi-region stack (a spec with two regions) runs the same components per region, named
``<region>/<component>`` (``eu-central/kafka``, ``us-east/gw-1``), each region on its own port
block; one Cassandra cluster with a node per region plus ``witness/cassandra`` (127.0.0.1/.2/.3,
same ports); one ``mirrormaker`` (MirrorMaker 2, every direction); one Prometheus and one
Alertmanager. Its JVMs start one at a time (one wave each).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from pathlib import Path

from opsctl.local._config import (
    HOST,
    WITNESS_DC,
    LocalConfig,
    Site,
    SpecValues,
    stack_sites,
)
from opsctl.local._exporters import (
    RedisReplicaCheck,
    exporter_http_check,
    jmx_agent_flags,
    kube_state_metrics_argv,
    mirrormaker_jmx_mapping,
    redis_exporter_argv,
    redis_exporter_url,
    render_ksm_kubeconfig,
)
from opsctl.local._health import (
    AllOf,
    CqlCheck,
    HealthCheck,
    HttpCheck,
    KafkaMetadataCheck,
    KafkaTopicsCheck,
    RedisLogin,
    RedisPing,
)
from opsctl.local._jvm import (
    CASSANDRA_FAST_START_FLAGS,
    CASSANDRA_JAVA17_FLAGS,
    MIRRORMAKER_JARS,
    jar_dir,
    java_command,
)
from opsctl.local._render import (
    CASSANDRA_LOGBACK,
    KAFKA_LOG4J2,
    MIRRORMAKER_LOG4J2,
    CassandraSecurity,
    RedisSecurity,
    cassandra_token,
    render_alertmanager_yml,
    render_cassandra_rackdc,
    render_cassandra_yaml,
    render_kafka_properties,
    render_mirrormaker_properties,
    render_prometheus_yml,
    render_redis_conf,
    write_generated_rules,
)
from opsctl.local._secrets import LocalSecrets
from opsctl.stack import _names as stack_names
from opsctl.stack._redis import REDIS_ACL, acl_rule

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
    MIRROR = 2  # MirrorMaker 2 (multi-region): a client of every region's Kafka
    # Exporters, kube-state-metrics, Alertmanager and Prometheus: before what they scrape, so
    # they log no spurious connection errors.
    MONITORING = 3
    JVM_STORES = 4  # Kafka and Cassandra
    REDIS = 5  # the primary and its replica


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
    # The address it listens on (a multi-region stack's Cassandra nodes use 127.0.0.2/.3).
    host: str = HOST
    # Within a phase, waves start in order, each healthy before the next (a multi-region
    # stack starts its JVMs one at a time); the members of one wave start together.
    wave: int = 0
    # Its region in a multi-region stack ("witness" for the witness node, "" when shared).
    region: str = ""


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

    @property
    def secrets(self) -> LocalSecrets:
        return LocalSecrets.of(self.root)

    def redis_login(self, user: str) -> RedisLogin:
        """How ``user`` reaches the stack's Redis (TLS, ACL): the health checks log in as
        the exporter, tools and tests as ``admin``."""
        secrets = self.secrets
        return RedisLogin(user, secrets.redis_password_file(user), secrets.ca_cert)


# Which Redis identity each IM process runs as (the relay as the dispatcher: same trust).
IM_REDIS_USERS = {
    "gateway": stack_names.REDIS_GATEWAY_USER,
    "dispatcher": stack_names.REDIS_DISPATCHER_USER,
    "relay": stack_names.REDIS_DISPATCHER_USER,
}
HEALTH_REDIS_USER = stack_names.REDIS_EXPORTER_USER
# And which Cassandra role. migrate is what tools and tests run as too (imgw_env): it owns
# every keyspace it creates, a test's own included.
IM_CASSANDRA_ROLES = {
    "migrate": stack_names.CASSANDRA_MIGRATE_ROLE,
    "gateway": stack_names.CASSANDRA_GATEWAY_ROLE,
    "dispatcher": stack_names.CASSANDRA_DISPATCHER_ROLE,
    "relay": stack_names.CASSANDRA_DISPATCHER_ROLE,
}


def cassandra_env(layout: Layout, role: str) -> dict[str, str]:
    """The IMGW_CASSANDRA_* login of one role (paths only)."""
    secrets = layout.secrets
    return {
        "IMGW_CASSANDRA_USERNAME": role,
        "IMGW_CASSANDRA_PASSWORD_FILE": str(secrets.cassandra_password_file(role)),
        "IMGW_CASSANDRA_CA_FILE": str(secrets.ca_cert),
    }


def login_env(layout: Layout, process: str) -> dict[str, str]:
    """Redis and Cassandra logins of one IM process (gateway, dispatcher, relay)."""
    return {
        **redis_env(layout, IM_REDIS_USERS[process]),
        **cassandra_env(layout, IM_CASSANDRA_ROLES[process]),
    }


def redis_env(layout: Layout, user: str) -> dict[str, str]:
    """The IMGW_REDIS_* login of one identity (paths only: the password stays in its file)."""
    secrets = layout.secrets
    return {
        "IMGW_REDIS_USERNAME": user,
        "IMGW_REDIS_PASSWORD_FILE": str(secrets.redis_password_file(user)),
        "IMGW_REDIS_CA_FILE": str(secrets.ca_cert),
    }


def base_env() -> dict[str, str]:
    """The parent's environment without IMGW_* (the stack sets those itself)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMGW_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def imgw_env(
    config: LocalConfig, spec: SpecValues, layout: Layout, site: Site | None = None
) -> dict[str, str]:
    """IMGW_* settings shared by migrate, the dispatcher and every gateway (see the contract).

    ``site``: one region of a multi-region stack (default: the one-region stack). A region's
    processes use its Kafka, Redis and Cassandra node, route to its DC
    (IMGW_CASSANDRA_DATACENTER: the keyspace is NetworkTopologyStrategy) and learn every region
    of the stack from IMGW_REGIONS (when the gateway's config declares it).
    """
    ports = site.ports if site else config.ports
    cassandra = (
        f"{site.cassandra_host}:{site.shared.cassandra}" if site else f"{HOST}:{ports.cassandra}"
    )
    env = {
        "IMGW_LISTEN_HOST": HOST,
        "IMGW_KAFKA_BOOTSTRAP": f"{HOST}:{ports.kafka}",
        "IMGW_KAFKA_TOPIC": config.kafka_topic,
        "IMGW_KAFKA_PARTITIONS": str(site.kafka_partitions if site else spec.kafka_partitions),
        "IMGW_KAFKA_REPLICATION_FACTOR": str(spec.kafka_replication_factor),
        "IMGW_REDIS_URL": redis_url(ports.redis),
        **redis_env(layout, IM_REDIS_USERS["gateway"]),
        "IMGW_CASSANDRA_HOSTS": cassandra,
        **cassandra_env(layout, IM_CASSANDRA_ROLES["migrate"]),
        "IMGW_CASSANDRA_KEYSPACE": config.cassandra_keyspace,
        "IMGW_CASSANDRA_REPLICATION_FACTOR": str(spec.cassandra_replication_factor),
        "IMGW_JWT_HS256_SECRET_FILE": str(layout.secret),
        "IMGW_JWT_ISSUER": config.jwt_issuer,
        "IMGW_JWT_AUDIENCE": config.jwt_audience,
        "IMGW_DRAIN_WINDOW_S": str(config.drain_window_s),
        # Every local client (load tests, drills) connects from 127.0.0.1: no per-IP limit.
        "IMGW_MAX_CONNECTIONS_PER_IP": "0",
        # Names the dispatcher's consumer group (im-dispatcher.<region>), as the chart does.
        "IMGW_REGION": site.region if site else spec.region,
    }
    if site is not None:
        env["IMGW_CASSANDRA_DATACENTER"] = site.datacenter
        if gateway_declares("regions"):
            env["IMGW_REGIONS"] = ",".join(spec.region_names)
    return env


def redis_url(port: int) -> str:
    """A local Redis: TLS only (rediss), database 0."""
    return f"rediss://{HOST}:{port}/0"


def gateway_declares(setting: str) -> bool:
    """Whether the gateway's config (gateway/config.py) has ``setting``: it refuses unknown
    IMGW_* variables, so the stack sets IMGW_REGIONS only once the gateway reads it."""
    from gateway.config import Config

    return setting in Config.model_fields


# ---- the components ---------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _write_private(path: Path, text: str) -> None:
    """A file that holds a secret: 0600 before anything is written to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file may have been created wider
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def kafka_cluster_id(state_file: Path) -> str:
    """The cluster id, generated once per state dir (Kafka's format: 16 bytes, base64url)."""
    if state_file.is_file():
        return state_file.read_text(encoding="utf-8").strip()
    cluster_id = "-"
    # Like Kafka's own Uuid.randomUuid: an id starting with "-" reads as an option to the
    # storage tool ("--cluster-id: expected one argument"), 1 start in 64.
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    _write(state_file, cluster_id + "\n")
    return cluster_id


def build_components(config: LocalConfig, spec: SpecValues) -> list[Component]:
    """Every component in start order (phase, wave, then list order)."""
    layout = Layout(config.state_dir)
    if spec.multi_region:
        return _multi_region_components(config, spec, layout)
    site = stack_sites(config, spec)[0]
    components = [
        _redis(config, layout, site),
        _cassandra(config, layout, site),  # the slowest starts first
        _kafka(config, layout, site),
    ]
    if config.exporters:
        components += _redis_exporters(config, layout, site)
    if config.watches_cluster:
        components.append(_kube_state_metrics(config, layout))
    components += [_alertmanager(config, layout), _prometheus(config, layout, spec)]
    if config.im:
        components += im_components(config, spec, layout)
    return components


def _multi_region_components(
    config: LocalConfig, spec: SpecValues, layout: Layout
) -> list[Component]:
    """Each region's Redis (and exporters) at once; then the JVMs one at a time: the Cassandra
    nodes (each region's DC, then the witness), each region's Kafka; after the migrations,
    MirrorMaker 2 with the gateways, then the dispatchers and relays (they read the mirrored
    topics MirrorMaker 2 creates)."""
    sites = stack_sites(config, spec)
    regions = [site for site in sites if not site.witness]
    seeds = tuple(site.cassandra_host for site in sites)
    components: list[Component] = []
    for site in regions:
        components.append(_redis(config, layout, site))
        if config.exporters:
            components += _redis_exporters(config, layout, site)
    if config.watches_cluster:
        components.append(_kube_state_metrics(config, layout))
    components += [_alertmanager(config, layout), _prometheus(config, layout, spec, sites)]
    jvms = [
        *(_cassandra(config, layout, site, seeds=seeds, index=i) for i, site in enumerate(sites)),
        *(_kafka(config, layout, site) for site in regions),
    ]
    components += [replace(jvm, wave=wave) for wave, jvm in enumerate(jvms)]
    if config.im:
        components.append(_mirrormaker(config, layout, regions))
        for site in regions:
            components += [
                replace(c, wave=1 if c.stop_group is StopGroup.DISPATCHER else 0)
                for c in im_components(config, spec, layout, site)
            ]
    return components


def _redis(config: LocalConfig, layout: Layout, site: Site) -> Component:
    port = site.ports.redis
    health = RedisPing(HOST, port, layout.redis_login(HEALTH_REDIS_USER))
    return _redis_server(config, layout, site, "redis", port, health=health)


def _redis_exporters(config: LocalConfig, layout: Layout, site: Site) -> list[Component]:
    ports = site.ports
    return [
        _redis_replica(config, layout, site),
        _redis_exporter(
            config,
            layout,
            site,
            "redis-exporter",
            redis_port=ports.redis,
            port=ports.redis_exporter,
        ),
        _redis_exporter(
            config,
            layout,
            site,
            "redis-replica-exporter",
            redis_port=ports.redis_replica,
            port=ports.redis_replica_exporter,
        ),
    ]


def _redis_replica(config: LocalConfig, layout: Layout, site: Site) -> Component:
    port = site.ports.redis_replica
    health = RedisReplicaCheck(HOST, port, layout.redis_login(HEALTH_REDIS_USER))
    return _redis_server(
        config, layout, site, "redis-replica", port, health=health, replica_of=site.ports.redis
    )


def _redis_server(
    config: LocalConfig,
    layout: Layout,
    site: Site,
    component: str,
    port: int,
    *,
    health: HealthCheck,
    replica_of: int | None = None,
) -> Component:
    """The primary and its replica: one redis-server each, stopped last (every group uses it)."""
    name = site.name(component)
    conf = layout.conf(name) / "redis.conf"

    def prepare() -> None:
        layout.data(name).mkdir(parents=True, exist_ok=True)
        rendered = render_redis_conf(
            port,
            layout.data(name),
            maxmemory=config.redis_maxmemory,
            maxmemory_policy=config.redis_maxmemory_policy,
            replica_of=replica_of,
            security=redis_security(layout.secrets, replica=replica_of is not None),
        )
        _write_private(conf, rendered)

    return Component(
        name=name,
        phase=Phase.INFRA,
        argv=[str(config.redis_server), str(conf)],
        port=port,
        health=health,
        endpoint=redis_url(port),
        start_timeout_s=20,
        stop_timeout_s=15,
        stop_group=StopGroup.REDIS,
        prepare=prepare,
        region=_region_of(site),
    )


def redis_security(secrets: LocalSecrets, *, replica: bool) -> RedisSecurity:
    """TLS with the local CA's server certificate, and the ACL users with their hashes."""
    secrets.ensure()
    users = {user: acl_rule(user, secrets.redis_password(user)) for user in REDIS_ACL}
    login = ("replica", secrets.redis_password("replica")) if replica else None
    return RedisSecurity(
        cert=secrets.server_cert,
        key=secrets.server_key,
        ca=secrets.ca_cert,
        users=users,
        primary_login=login,
    )


def _region_of(site: Site) -> str:
    """A component's region as status reports it: only a multi-region stack names one."""
    return site.region if site.prefix else ""


def _jvm_service(
    name: str,
    argv: list[str],
    port: int,
    health: HealthCheck,
    *,
    start_timeout_s: float,
    stop_timeout_s: float,
    prepare: Callable[[], list[str] | None],
    site: Site,
    host: str = HOST,
) -> Component:
    """Kafka and Cassandra: infrastructure on host:port, stopped after the services using them."""
    return Component(
        name=name,
        phase=Phase.INFRA,
        argv=argv,
        port=port,
        health=health,
        endpoint=f"{host}:{port}",
        start_timeout_s=start_timeout_s,
        stop_timeout_s=stop_timeout_s,
        stop_group=StopGroup.JVM_STORES,
        prepare=prepare,
        host=host,
        region=_region_of(site),
    )


def _kafka(config: LocalConfig, layout: Layout, site: Site) -> Component:
    name = site.name("kafka")
    conf_dir = layout.conf(name)
    properties = conf_dir / "server.properties"
    log4j = conf_dir / "log4j2.properties"
    data = layout.data(name)
    classpath = str(jar_dir(config, "kafka") / "*")
    heap = config.region_kafka_heap if site.prefix else config.kafka_heap
    jvm = [
        *java_command(config, heap, ["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]),
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        classpath,
    ]

    agent = jmx_agent_flags(config, "kafka", site.ports.kafka_metrics)
    # The agent only on the broker: the format step would otherwise bind its port too.
    run = [*jvm, *agent, "kafka.Kafka", str(properties)]

    def prepare() -> list[str] | None:
        _write(properties, render_kafka_properties(config, data, site.ports))
        _write(log4j, KAFKA_LOG4J2)
        if (data / "meta.properties").is_file():
            return None
        # First start: the equivalent of `kafka-storage format` for a single KRaft node, then
        # the broker, as one command so both run while the other components start.
        cluster_id = kafka_cluster_id(config.state_dir / name / "cluster-id")
        fmt = [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)]
        return ["/bin/sh", "-c", f"{shlex.join(fmt)} && exec {shlex.join(run)}"]

    port = site.ports.kafka
    return _jvm_service(
        name,
        run,
        port,
        KafkaMetadataCheck(HOST, port),
        start_timeout_s=120,
        stop_timeout_s=30,
        prepare=prepare,
        site=site,
    )


def _cassandra(
    config: LocalConfig,
    layout: Layout,
    site: Site,
    *,
    seeds: tuple[str, ...] = (HOST,),
    index: int = 0,
) -> Component:
    """One Cassandra node: the one-region stack's, or a multi-region stack's node ``index`` of
    ``seeds`` (one per DC, on its own loopback address, with the same ports)."""
    name = site.name("cassandra")
    host = site.cassandra_host
    conf_dir = layout.conf(name)
    cassandra_yaml = conf_dir / "cassandra.yaml"
    logback = conf_dir / "logback.xml"
    rackdc = conf_dir / "cassandra-rackdc.properties"
    data = layout.data(name)
    jars = jar_dir(config, "cassandra")
    jamm = sorted(jars.glob("jamm-*.jar"))
    tuning = [
        "-Xss512k",
        "-XX:+UseG1GC",
        "-XX:+ParallelRefProcEnabled",
        "-XX:MaxTenuringThreshold=1",
    ]
    heap = config.region_cassandra_heap if site.datacenter else config.cassandra_heap
    snitch = [f"-Dcassandra-rackdc.properties={rackdc.as_uri()}"] if site.datacenter else []
    argv = [
        *java_command(config, heap, tuning),
        *CASSANDRA_JAVA17_FLAGS,
        *(f"-javaagent:{jar}" for jar in jamm[:1]),
        *jmx_agent_flags(config, "cassandra", site.shared.cassandra_metrics, host=host),
        "-Dcassandra-foreground=yes",
        f"-Dcassandra.config={cassandra_yaml.as_uri()}",
        *snitch,
        f"-Dlogback.configurationFile={logback}",
        f"-Dcassandra.logdir={config.state_dir / 'logs'}",
        f"-Dcassandra.storagedir={data}",
        *CASSANDRA_FAST_START_FLAGS,
        "-cp",
        str(jars / "*"),
        "org.apache.cassandra.service.CassandraDaemon",
    ]

    token = cassandra_token(index, len(seeds)) if site.datacenter else 0

    def prepare() -> None:
        data.mkdir(parents=True, exist_ok=True)
        layout.secrets.ensure()
        security = CassandraSecurity(keystore=layout.secrets.server_pem)
        rendered = render_cassandra_yaml(
            config, data, host=host, seeds=seeds, token=token, security=security
        )
        _write(cassandra_yaml, rendered)
        _write(logback, CASSANDRA_LOGBACK)
        if site.datacenter:
            _write(rackdc, render_cassandra_rackdc(site.datacenter))

    port = site.shared.cassandra
    return _jvm_service(
        name,
        argv,
        port,
        CqlCheck(host, port, ca_file=layout.secrets.ca_cert),
        start_timeout_s=180,
        stop_timeout_s=40,
        prepare=prepare,
        site=site,
        host=host,
    )


def _mirrormaker(config: LocalConfig, layout: Layout, regions: list[Site]) -> Component:
    """One dedicated MirrorMaker 2 for every direction between the regions' Kafkas. Healthy
    once every region's messages topic has arrived in every other region as
    ``<source>.im.messages`` (it is started after the migrations created the topics)."""
    name = "mirrormaker"
    conf_dir = layout.conf(name)
    properties = conf_dir / "mm2.properties"
    log4j = conf_dir / "log4j2.properties"
    fallback_mapping = conf_dir / "jmx-exporter.yaml"
    mapping, default_mapping = mirrormaker_jmx_mapping(config, fallback_mapping)
    port = config.ports.mirrormaker_metrics
    argv = [
        *java_command(config, config.mirrormaker_heap, ["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]),
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        *jmx_agent_flags(config, "mirrormaker", port, mapping=mapping),
        "-cp",
        str(jar_dir(config, MIRRORMAKER_JARS) / "*"),
        "org.apache.kafka.connect.mirror.MirrorMaker",
        str(properties),
    ]
    clusters = [(site.region, f"{HOST}:{site.ports.kafka}") for site in regions]

    def prepare() -> None:
        _write(properties, render_mirrormaker_properties(clusters))
        _write(log4j, MIRRORMAKER_LOG4J2)
        if default_mapping is not None:
            _write(fallback_mapping, default_mapping)

    mirrored = [
        KafkaTopicsCheck(
            HOST,
            target.ports.kafka,
            tuple(
                f"{source.region}.{config.kafka_topic}" for source in regions if source != target
            ),
        )
        for target in regions
    ]
    return Component(
        name=name,
        phase=Phase.IM,
        argv=argv,
        port=port,
        health=AllOf(tuple(mirrored)),
        endpoint=" <-> ".join(site.region for site in regions),
        start_timeout_s=120,
        stop_timeout_s=30,
        stop_group=StopGroup.MIRROR,
        prepare=prepare,
    )


def _redis_exporter(
    config: LocalConfig, layout: Layout, site: Site, component: str, *, redis_port: int, port: int
) -> Component:
    name = site.name(component)
    login = layout.redis_login(stack_names.REDIS_EXPORTER_USER)
    password_map = layout.conf(name) / "redis-passwords.json"

    def prepare() -> None:
        password = layout.secrets.redis_password(login.user)
        # redis_exporter looks the password up by the URL with the user in it.
        key = redis_exporter_url(redis_port).replace("://", f"://{login.user}@", 1)
        _write_private(password_map, json.dumps({key: password}))

    return Component(
        name=name,
        phase=Phase.INFRA,
        argv=redis_exporter_argv(config, redis_port, port, login=login, password_map=password_map),
        prepare=prepare,
        port=port,
        health=exporter_http_check(port),
        endpoint=f"http://{HOST}:{port}/metrics",
        start_timeout_s=20,
        stop_timeout_s=10,
        stop_group=StopGroup.MONITORING,
        region=_region_of(site),
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


def _prometheus(
    config: LocalConfig, layout: Layout, spec: SpecValues, sites: list[Site] | None = None
) -> Component:
    conf = layout.conf("prometheus") / "prometheus.yml"
    generated = layout.conf("prometheus") / "generated-rules"
    port = config.ports.prometheus

    def prepare() -> None:
        layout.data("prometheus").mkdir(parents=True, exist_ok=True)
        write_generated_rules(config, generated)
        _write(conf, render_prometheus_yml(config, spec, generated, sites))

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


def im_components(
    config: LocalConfig, spec: SpecValues, layout: Layout, site: Site | None = None
) -> list[Component]:
    """The dispatcher and the gateways; of one region's ``site`` in a multi-region stack, also
    the relay (it applies the messages homed in the other regions, docs/multi-region.md 6)."""
    shared = imgw_env(config, spec, layout, site)
    ports = site.ports if site else config.ports
    prefix = site.prefix if site else ""
    region = _region_of(site) if site else ""
    python = str(config.python)
    stop_timeout = config.drain_window_s + 8  # the contract: drained before drain window + 5 s
    dispatcher = Component(
        name=f"{prefix}dispatcher",
        phase=Phase.IM,
        argv=[python, "-m", "gateway.dispatcher"],
        env={
            **shared,
            **login_env(layout, "dispatcher"),
            "IMGW_NODE_ID": "dispatcher-1",
            "IMGW_LISTEN_PORT": str(ports.dispatcher),
        },
        cwd=config.repo_root,
        port=ports.dispatcher,
        health=HttpCheck(HOST, ports.dispatcher, "/readyz"),
        endpoint=f"http://{HOST}:{ports.dispatcher}",
        start_timeout_s=60,
        stop_timeout_s=stop_timeout,
        stop_group=StopGroup.DISPATCHER,
        region=region,
    )
    gateways = [
        Component(
            name=f"{prefix}{node}",
            phase=Phase.IM,
            argv=[python, "-m", "gateway.server"],
            env={
                **shared,
                **login_env(layout, "gateway"),
                "IMGW_NODE_ID": node,
                "IMGW_LISTEN_PORT": str(ports.gateway(i)),
            },
            cwd=config.repo_root,
            port=ports.gateway(i),
            health=HttpCheck(HOST, ports.gateway(i), "/readyz"),
            endpoint=f"ws://{HOST}:{ports.gateway(i)}/ws",
            start_timeout_s=60,
            stop_timeout_s=stop_timeout,
            stop_group=StopGroup.GATEWAYS,
            region=region,
        )
        for i, node in enumerate(config.gateway_ids)
    ]
    if not prefix:
        return [dispatcher, *gateways]
    relay = replace(
        dispatcher,
        name=f"{prefix}relay",
        argv=[python, "-m", "gateway.relay"],
        env={
            **shared,
            **login_env(layout, "relay"),
            "IMGW_NODE_ID": "relay-1",
            "IMGW_LISTEN_PORT": str(ports.relay),
        },
        port=ports.relay,
        health=HttpCheck(HOST, ports.relay, "/readyz"),
        endpoint=f"http://{HOST}:{ports.relay}",
    )
    return [dispatcher, relay, *gateways]


def alert_webhook_url(config: LocalConfig) -> str:
    return f"http://{HOST}:{config.ports.alert_webhook}/alerts"


def migrate_argv(config: LocalConfig) -> list[str]:
    return [str(config.python), "-m", "gateway.migrate"]


@dataclass(frozen=True)
class Migration:
    """One run of ``gateway.migrate`` before the IM processes start."""

    name: str  # its log: logs/<name>.log
    argv: list[str]
    env: dict[str, str]


def migrations(config: LocalConfig, spec: SpecValues, layout: Layout) -> list[Migration]:
    """The one-region stack: one run. A multi-region stack: one per region, one after the
    other (each creates its Kafka's topics and adds its DC to the keyspace's replication,
    keeping the others'), then a CQL-only run for the witness DC, so the keyspace ends up
    NetworkTopologyStrategy over every region's DC and the witness."""
    argv = migrate_argv(config)
    if not spec.multi_region:
        return [Migration("migrate", argv, imgw_env(config, spec, layout))]
    runs = []
    for site in stack_sites(config, spec):
        env = imgw_env(config, spec, layout, site)
        if site.witness:
            # The witness is a DC, not a region: the run names the first region (the gateway
            # wants IMGW_REGION among IMGW_REGIONS) and adds only the witness DC's replica.
            env["IMGW_REGION"] = spec.region
            runs.append(Migration(f"{WITNESS_DC}/migrate", [*argv, "--only", "cql"], env))
        else:
            runs.append(Migration(site.name("migrate"), argv, env))
    return runs
