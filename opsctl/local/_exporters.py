"""The exporters production runs, run locally too: the Prometheus JMX exporter agent inside the
Kafka and Cassandra JVMs, redis_exporter next to the Redis primary and its replica, and
(when a cluster is attached) kube-state-metrics. Their metric names are the ones the alert
rules in alerts/rules/ use; the JMX mappings are alerts/exporters/*-jmx.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from opsctl.errors import ToolMissing
from opsctl.local._config import HOST, VERSIONS_FILE, LocalConfig, Site, jvm_versions
from opsctl.local._errors import ArtifactMissing
from opsctl.local._health import (
    Health,
    HttpCheck,
    RedisLogin,
    RedisPing,
    SocketCheck,
    redis_socket,
)

EXPORTER_CONFIG_DIR = Path("alerts") / "exporters"
# What kube-state-metrics lists and watches: only what the rules and dashboards read.
KSM_RESOURCES = (
    "deployments",
    "horizontalpodautoscalers",
    "namespaces",
    "poddisruptionbudgets",
    "pods",
    "statefulsets",
)


def jmx_agent_jar(config: LocalConfig) -> Path:
    """The JMX exporter agent fetched by scripts/setup/jars.sh."""
    version = jvm_versions(VERSIONS_FILE)["JMX_EXPORTER_VERSION"]
    return (
        config.cache_dir
        / "jars"
        / f"jmx-exporter-{version}"
        / (f"jmx_prometheus_javaagent-{version}.jar")
    )


def jmx_exporter_config(config: LocalConfig, name: str) -> Path:
    """``alerts/exporters/<name>-jmx.yaml``: the same mapping the clusters mount."""
    return config.repo_root / EXPORTER_CONFIG_DIR / f"{name}-jmx.yaml"


def jmx_agent_flags(
    config: LocalConfig, name: str, port: int, *, host: str = HOST, mapping: Path | None = None
) -> list[str]:
    """``-javaagent:<jar>=<host>:<port>:<config>``, or nothing when exporters are off."""
    if not config.exporters:
        return []
    jar = jmx_agent_jar(config)
    mapping = mapping or jmx_exporter_config(config, name)
    return [f"-javaagent:{jar}={host}:{port}:{mapping}"]


# MirrorMaker 2's MBeans as the agent names them by default (kafka_connect_mirror_*, e.g.
# kafka_connect_mirror_mirrorsourceconnector_replication_latency_ms_max), used until
# alerts/exporters/mirrormaker-jmx.yaml (the clusters' mapping) exists; the agent adds jvm_*.
MIRRORMAKER_DEFAULT_JMX = """\
lowercaseOutputName: true
lowercaseOutputLabelNames: true
includeObjectNames:
  - "kafka.connect.mirror:*"
  - "kafka.connect:type=connect-worker-metrics"
  - "kafka.connect:type=connector-task-metrics,*"
"""


def mirrormaker_jmx_mapping(config: LocalConfig, fallback: Path) -> tuple[Path, str | None]:
    """The mapping for MirrorMaker 2's agent: alerts/exporters/mirrormaker-jmx.yaml when it
    exists, else ``fallback`` with the text to write there."""
    shipped = jmx_exporter_config(config, "mirrormaker")
    if shipped.is_file():
        return shipped, None
    return fallback, MIRRORMAKER_DEFAULT_JMX


def check_exporters(config: LocalConfig) -> None:
    """Everything the exporters need is in place, before anything starts."""
    if not config.exporters:
        if config.watches_cluster:
            _require_binary(config.kube_state_metrics, "kube-state-metrics")
        return
    jar = jmx_agent_jar(config)
    if not jar.is_file():
        raise ArtifactMissing(
            f"the Prometheus JMX exporter agent is not in the cache ({jar})",
            hint="run `make setup` (scripts/setup/jars.sh fetches it from Maven Central)",
        )
    for name in ("kafka", "cassandra"):
        mapping = jmx_exporter_config(config, name)
        if not mapping.is_file():
            raise ArtifactMissing(f"the JMX exporter mapping for {name} is missing: {mapping}")
    _require_binary(config.redis_exporter, "redis_exporter")
    if config.watches_cluster:
        _require_binary(config.kube_state_metrics, "kube-state-metrics")


def _require_binary(path: Path, name: str) -> None:
    if not path.is_file():
        raise ToolMissing(
            f"{name} not found at {path}",
            hint=f"run `make setup` (or scripts/setup/gotools.sh {name}) to build it",
        )


def redis_exporter_argv(
    config: LocalConfig,
    redis_port: int,
    listen_port: int,
    *,
    login: RedisLogin | None = None,
    password_map: Path | None = None,
) -> list[str]:
    """``login``: a TLS-only Redis with ACL users; redis_exporter reads the password from
    ``password_map`` (its format: a JSON object, Redis URL -> password), never a flag."""
    if login is None:
        return [
            str(config.redis_exporter),
            f"--redis.addr=redis://{HOST}:{redis_port}",
            f"--web.listen-address={HOST}:{listen_port}",
            "--log-format=txt",
        ]
    return [
        str(config.redis_exporter),
        f"--redis.addr={redis_exporter_url(redis_port)}",
        f"--redis.user={login.user}",
        *([f"--redis.password-file={password_map}"] if password_map else []),
        f"--tls-ca-cert-file={login.ca_file}",
        # No CONFIG GET: the exporter's ACL user may not read the config (masterauth).
        "--config-command=-",
        f"--web.listen-address={HOST}:{listen_port}",
        "--log-format=txt",
    ]


def redis_exporter_url(redis_port: int) -> str:
    return f"rediss://{HOST}:{redis_port}"


def kube_state_metrics_argv(config: LocalConfig, kubeconfig: Path) -> list[str]:
    ports = config.ports
    return [
        str(config.kube_state_metrics),
        f"--kubeconfig={kubeconfig}",
        f"--host={HOST}",
        f"--port={ports.kube_state_metrics}",
        f"--telemetry-host={HOST}",
        f"--telemetry-port={ports.kube_state_metrics_telemetry}",
        f"--resources={','.join(KSM_RESOURCES)}",
    ]


def render_ksm_kubeconfig(source: Path, context: str | None) -> str:
    """The kubeconfig kube-state-metrics gets: the user's, with the chosen context current and
    relative file references made absolute (the copy lives in the state dir)."""
    document: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
    if context:
        document["current-context"] = context
    base = source.parent
    for section, inner in (("clusters", "cluster"), ("users", "user")):
        for entry in document.get(section) or []:
            body = entry.get(inner) or {}
            for key in ("certificate-authority", "client-certificate", "client-key", "tokenFile"):
                value = body.get(key)
                if isinstance(value, str) and value and not Path(value).is_absolute():
                    body[key] = str(base / value)
    return yaml.safe_dump(document, sort_keys=False)


Target = tuple[str, int, dict[str, str]]  # host, port, extra labels


def exporter_scrape_configs(
    config: LocalConfig, labels: dict[str, str], sites: list[Site] | None = None
) -> list[dict[str, Any]]:
    """Prometheus jobs for the exporters; job names are the ones the alert rules select on.

    ``sites``: a multi-region stack's regions and witness (each target labelled with its
    region); default: the one-region stack.
    """
    ports = config.ports
    sites = sites or [Site(labels.get("region", ""), ports, ports)]
    jobs: list[dict[str, Any]] = []
    if config.exporters:
        kafka: list[Target] = []
        cassandra: list[Target] = []
        redis: list[Target] = []
        for site in sites:
            where = {"region": site.region} if site.region else {}
            cassandra.append(
                (
                    site.cassandra_host,
                    site.shared.cassandra_metrics,
                    {**where, "node": "cassandra-1"},
                )
            )
            if site.witness:
                continue
            kafka.append((HOST, site.ports.kafka_metrics, {**where, "node": "kafka-1"}))
            redis += [
                (HOST, site.ports.redis_exporter, {**where, "node": "redis-1", "role": "primary"}),
                (
                    HOST,
                    site.ports.redis_replica_exporter,
                    {**where, "node": "redis-replica-1", "role": "replica"},
                ),
            ]
        jobs += [
            _job("kafka", kafka, labels),
            _job("cassandra", cassandra, labels),
            _job("redis", redis, labels),
        ]
    if config.watches_cluster:
        # honor_labels: the namespace/pod labels are the objects', not the exporter's.
        job = _job("kube-state-metrics", [(HOST, ports.kube_state_metrics, {})], labels)
        job["honor_labels"] = True
        jobs.append(job)
    return jobs


def mirrormaker_scrape_config(config: LocalConfig, labels: dict[str, str]) -> dict[str, Any]:
    """MirrorMaker 2's agent (one dedicated process for every direction; it is labelled with
    the first region, where it runs; its own metrics carry source and target)."""
    target: Target = (HOST, config.ports.mirrormaker_metrics, {"node": "mirrormaker-1"})
    return _job("mirrormaker", [target], labels)


def exporter_metrics_urls(
    config: LocalConfig, sites: list[Site] | None = None, *, mirrormaker: bool = False
) -> dict[str, tuple[str, ...]]:
    """Prometheus job -> the /metrics URLs it scrapes (for tools and tests)."""
    jobs = exporter_scrape_configs(config, {}, sites)
    if mirrormaker and config.exporters:
        jobs.append(mirrormaker_scrape_config(config, {}))
    return {
        job["job_name"]: tuple(
            f"http://{target}/metrics"
            for group in job["static_configs"]
            for target in group["targets"]
        )
        for job in jobs
    }


def _job(name: str, targets: list[Target], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "job_name": name,
        "static_configs": [
            {"targets": [f"{host}:{port}"], "labels": {**labels, **extra}}
            for host, port, extra in targets
        ],
    }


@dataclass(frozen=True)
class RedisReplicaCheck(SocketCheck):
    """Healthy when the replica answers and its link to the primary is up."""

    probe = "redis INFO replication"
    login: RedisLogin | None = None

    def __call__(self, timeout_s: float) -> Health:
        ping = RedisPing(self.host, self.port, self.login)(timeout_s)
        if not ping.ok:
            return ping
        try:
            with redis_socket(self.host, self.port, self.login, timeout_s) as sock:
                sock.sendall(b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n")
                reply = b""
                while b"\r\n" not in reply or len(reply) < _bulk_length(reply):
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
        except OSError as exc:
            return Health(False, f"INFO replication: {exc}")
        if b"master_link_status:up" in reply:
            return Health(True, "replica, link to primary up")
        return Health(False, "replica not yet in sync with its primary")


def _bulk_length(reply: bytes) -> int:
    """Total bytes of a RESP bulk string reply (header + payload + CRLF), once known."""
    header, sep, _ = reply.partition(b"\r\n")
    if not sep or not header.startswith(b"$"):
        return len(reply)
    return len(header) + 2 + int(header[1:]) + 2


def exporter_http_check(port: int) -> HttpCheck:
    return HttpCheck(HOST, port, "/metrics")
