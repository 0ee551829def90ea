"""The local stack's configuration: one typed model holding every port, path and size.

Ports are laid out from one base port (default 19100) at fixed offsets, so a whole stack can be
moved with one number (tests pick a free block) and single ports can still be overridden.
Values resolve as: explicit argument (CLI flag) > environment variable > default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from opsctl.errors import UserInputError
from opsctl.paths import DEFAULT_INFRA_DIR, REPO_ROOT, cache_dir
from opsctl.spec import StackSpec

# Every component listens here, and only here.
HOST = "127.0.0.1"
DEFAULT_STATE_DIR = REPO_ROOT / ".state" / "local"
DEFAULT_BASE_PORT = 19100
DEFAULT_GATEWAYS = 2
# A multi-region stack runs this many gateways per region unless told otherwise.
DEFAULT_REGION_GATEWAYS = 1
MAX_GATEWAYS = 16
# What one machine runs (docs/multi-region.md section 9): two data regions, each a Kafka, a
# Redis, a Cassandra DC and the IM processes, plus a witness DC and one MirrorMaker 2: about
# 8-10 GB and every core of a 2-core machine. A third region is refused (exit 2).
MAX_LOCAL_REGIONS = 2
# The Cassandra DC that holds no clients, only a vote (docs/multi-region.md section 4).
WITNESS_DC = "witness"
# A multi-region stack's Cassandra nodes: one per DC on these loopback aliases, same ports.
CASSANDRA_NODE_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
VERSIONS_FILE = REPO_ROOT / "scripts" / "setup" / "jars" / "versions.env"

ENV_STATE_DIR = "OPSCTL_LOCAL_STATE_DIR"
ENV_BASE_PORT = "OPSCTL_LOCAL_BASE_PORT"
ENV_GATEWAYS = "OPSCTL_LOCAL_GATEWAYS"
ENV_KUBECONFIG = "OPSCTL_LOCAL_KUBECONFIG"
ENV_KUBE_CONTEXT = "OPSCTL_LOCAL_KUBE_CONTEXT"
# Set in every process the stack starts; `down` sweeps by it, so nothing escapes.
ENV_MARKER = "OPSCTL_LOCAL_STACK"

Port = Annotated[int, Field(ge=1024, le=65535)]

# Offsets from the base port. Gateways take consecutive ports from GATEWAY_OFFSET.
PORT_OFFSETS: dict[str, int] = {
    "redis": 0,
    "kafka": 1,
    "kafka_controller": 2,
    "cassandra": 3,
    "cassandra_storage": 4,
    "prometheus": 5,
    "alertmanager": 6,
    "alert_webhook": 7,
    "dispatcher": 8,
    # The relay of a multi-region stack's region (docs/multi-region.md section 6).
    "relay": 9,
}
GATEWAY_OFFSET = 10
# The exporters and the Redis replica sit after the largest gateway block.
EXPORTER_OFFSET = GATEWAY_OFFSET + MAX_GATEWAYS
PORT_OFFSETS.update(
    {
        "kafka_metrics": EXPORTER_OFFSET,
        "cassandra_metrics": EXPORTER_OFFSET + 1,
        "redis_replica": EXPORTER_OFFSET + 2,
        "redis_exporter": EXPORTER_OFFSET + 3,
        "redis_replica_exporter": EXPORTER_OFFSET + 4,
        "kube_state_metrics": EXPORTER_OFFSET + 5,
        "kube_state_metrics_telemetry": EXPORTER_OFFSET + 6,
        # MirrorMaker 2's JMX exporter agent (multi-region stacks, first region's block only).
        "mirrormaker_metrics": EXPORTER_OFFSET + 7,
    }
)
PORT_BLOCK_SIZE = EXPORTER_OFFSET + 8


@dataclass(frozen=True)
class RegionValues:
    """One region of a multi-region stack, as the local stack runs it."""

    name: str
    kafka_partitions: int


@dataclass(frozen=True)
class SpecValues:
    """What the local stack takes from the stack spec (the one source of truth).

    The first region's values; ``regions`` lists every region of a multi-region stack (empty
    for a one-region stack). Locally each region has one Kafka broker and each DC one
    Cassandra node, so a multi-region stack's replication factors are 1.
    """

    region: str
    kafka_partitions: int
    kafka_replication_factor: int
    cassandra_replication_factor: int
    retention: str
    regions: tuple[RegionValues, ...] = ()

    @classmethod
    def from_spec(cls, spec: StackSpec, stack: str = "local") -> SpecValues:
        """Raises UserInputError (exit 2) for more regions than one machine runs."""
        if len(spec.regions) > MAX_LOCAL_REGIONS:
            names = ", ".join(region.name for region in spec.regions)
            raise UserInputError(
                f"stack '{stack}' has {len(spec.regions)} regions ({names}); the local stack runs "
                f"at most {MAX_LOCAL_REGIONS} on one machine (each region is a Kafka, a Redis, a "
                "Cassandra DC and the IM processes; two regions plus the witness DC and "
                "MirrorMaker 2 take about 8-10 GB and every core of a 2-core machine)",
                hint="run a stack with 1 or 2 regions, e.g. `opsctl local up --stack staging`",
            )
        if any(region.name == WITNESS_DC for region in spec.regions):
            raise UserInputError(
                f"stack '{stack}': a region is named '{WITNESS_DC}', the name of the local "
                "stack's witness datacenter"
            )
        region = spec.regions[0]
        if len(spec.regions) == 1:
            return cls(
                region=region.name,
                kafka_partitions=region.kafka.message_partitions,
                kafka_replication_factor=region.kafka.replication_factor,
                cassandra_replication_factor=region.cassandra.replication_factor,
                retention=region.monitoring.retention,
            )
        return cls(
            region=region.name,
            kafka_partitions=region.kafka.message_partitions,
            kafka_replication_factor=1,
            cassandra_replication_factor=1,
            retention=region.monitoring.retention,
            regions=tuple(RegionValues(r.name, r.kafka.message_partitions) for r in spec.regions),
        )

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> SpecValues:
        """The inverse of ``dataclasses.asdict`` (what stack.json records)."""
        values = dict(data)
        raw_regions = values.pop("regions", ())
        regions = tuple(RegionValues(**entry) for entry in raw_regions)  # type: ignore[attr-defined]
        return cls(**values, regions=regions)  # type: ignore[arg-type]

    @property
    def multi_region(self) -> bool:
        return len(self.regions) > 1

    @property
    def region_names(self) -> list[str]:
        return [region.name for region in self.regions] or [self.region]


def _default_python() -> Path:
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


class Ports(BaseModel):
    """Every TCP port the stack listens on (all on 127.0.0.1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis: Port
    kafka: Port
    kafka_controller: Port
    cassandra: Port  # CQL native protocol
    cassandra_storage: Port  # inter-node; unused by clients but bound
    prometheus: Port
    alertmanager: Port
    # Where Alertmanager's webhook receiver posts; nothing of ours listens (tests may).
    alert_webhook: Port
    dispatcher: Port
    relay: Port  # only bound by a multi-region stack
    gateway_first: Port
    # The JMX exporter agents inside the Kafka and Cassandra JVMs.
    kafka_metrics: Port
    cassandra_metrics: Port
    redis_replica: Port
    redis_exporter: Port
    redis_replica_exporter: Port
    # Only bound when a cluster is attached (kubeconfig given).
    kube_state_metrics: Port
    kube_state_metrics_telemetry: Port
    # Only bound by a multi-region stack's MirrorMaker 2 (the first region's block).
    mirrormaker_metrics: Port

    @model_validator(mode="before")
    @classmethod
    def _fill_exporter_ports(cls, data: object) -> object:
        # Stacks recorded before the exporters (or the relay) existed: their ports follow
        # from the base.
        if isinstance(data, dict) and isinstance(data.get("redis"), int):
            for name, offset in PORT_OFFSETS.items():
                if offset >= EXPORTER_OFFSET or name == "relay":
                    data.setdefault(name, data["redis"] + offset)
        return data

    @classmethod
    def from_base(cls, base: int, overrides: Mapping[str, int] | None = None) -> Ports:
        values = {name: base + offset for name, offset in PORT_OFFSETS.items()}
        values["gateway_first"] = base + GATEWAY_OFFSET
        for name, port in (overrides or {}).items():
            if name not in values:
                known = ", ".join(values)
                raise UserInputError(f"--port {name}=...: unknown port name; known: {known}")
            values[name] = port
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise _input_error("ports", exc) from None

    def gateway(self, index: int) -> int:
        """Port of gateway ``index`` (0-based)."""
        return self.gateway_first + index


class LocalConfig(BaseModel):
    """Everything `opsctl local up` needs; recorded in the state dir so down/status reuse it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dir: Path
    ports: Ports
    gateways: int = Field(default=DEFAULT_GATEWAYS, ge=1, le=MAX_GATEWAYS)
    # Start migrate, the dispatcher and the gateways; False brings up only the infrastructure.
    im: bool = True
    infra_dir: Path = DEFAULT_INFRA_DIR
    spec_stack: str = "local"
    rule_globs: tuple[str, ...] = ("alerts/rules/*.yaml", "alerts/build/*.yaml")
    repo_root: Path = REPO_ROOT
    cache_dir: Path = Field(default_factory=cache_dir)
    java: Path = Path("/usr/bin/java")
    python: Path = Field(default_factory=_default_python)
    redis_server: Path = Path("/usr/bin/redis-server")
    prometheus: Path = Path("/usr/bin/prometheus")
    alertmanager: Path = Path("/usr/bin/prometheus-alertmanager")
    redis_exporter: Path = Field(default_factory=lambda: cache_dir() / "bin" / "redis_exporter")
    kube_state_metrics: Path = Field(
        default_factory=lambda: cache_dir() / "bin" / "kube-state-metrics"
    )
    # The exporters production runs (JMX agents, redis_exporter, a Redis replica); False runs
    # the bare stack.
    exporters: bool = True
    # Presence, routes, dedup and caches all carry TTLs; sequence data does not and must never
    # be evicted, so only keys with a TTL are candidates (volatile-lru).
    redis_maxmemory: str = Field(default="256mb", pattern=r"^[0-9]+(kb|mb|gb)$")
    redis_maxmemory_policy: str = "volatile-lru"
    # A cluster to watch with kube-state-metrics (off unless a kubeconfig is given).
    kubeconfig: Path | None = None
    kube_context: str | None = None
    kafka_heap: str = Field(default="512m", pattern=r"^[0-9]+[mMgG]$")
    cassandra_heap: str = Field(default="1G", pattern=r"^[0-9]+[mMgG]$")
    # A multi-region stack runs five JVMs plus MirrorMaker 2 on one machine: smaller heaps.
    region_kafka_heap: str = Field(default="384m", pattern=r"^[0-9]+[mMgG]$")
    region_cassandra_heap: str = Field(default="768m", pattern=r"^[0-9]+[mMgG]$")
    mirrormaker_heap: str = Field(default="256m", pattern=r"^[0-9]+[mMgG]$")
    jvm_quick_start: bool = True
    # Extra or overriding server.properties entries (tuning, or breaking it on purpose in tests).
    kafka_overrides: dict[str, str] = Field(default_factory=dict)
    scrape_interval_s: int = Field(default=2, ge=1, le=60)
    drain_window_s: int = Field(default=2, ge=0, le=300)
    jwt_issuer: str = "im-local"
    jwt_audience: str = "im-gateway"
    kafka_topic: str = "im.messages"
    cassandra_keyspace: str = "im"

    @model_validator(mode="after")
    def _ports_distinct(self) -> LocalConfig:
        seen: dict[int, str] = {}
        named = [(name, getattr(self.ports, name)) for name in PORT_OFFSETS]
        named += [(f"gateway {i + 1}", self.ports.gateway(i)) for i in range(self.gateways)]
        for name, port in named:
            if port > 65535:
                raise ValueError(f"{name} port {port} is above 65535")
            if port in seen:
                raise ValueError(f"port {port} is used by both {seen[port]} and {name}")
            seen[port] = name
        return self

    @property
    def watches_cluster(self) -> bool:
        return self.kubeconfig is not None

    @property
    def gateway_ids(self) -> list[str]:
        return [f"gw-{i + 1}" for i in range(self.gateways)]

    def recorded_file(self) -> Path:
        return self.state_dir / "stack.json"

    def region_ports(self, index: int) -> Ports:
        """The ports of a multi-region stack's region ``index`` (0-based, spec order): the
        first region has ``ports`` (overrides included), each next one the block after."""
        if index == 0:
            return self.ports
        return Ports.from_base(self.ports.redis + index * PORT_BLOCK_SIZE)


@dataclass(frozen=True)
class Site:
    """Where one region's processes run.

    The one-region stack is one site without a name prefix. A multi-region stack has one per
    region (components named ``<region>/<component>``, its own port block, its own Cassandra
    node and DC) plus the witness, which runs only a Cassandra node. ``shared`` is the first
    region's block: Prometheus, Alertmanager, MirrorMaker 2's metrics and every Cassandra
    node's ports (the nodes differ by address, 127.0.0.1/.2/.3, not by port).
    """

    region: str
    ports: Ports
    shared: Ports
    prefix: str = ""
    cassandra_host: str = HOST
    # The Cassandra DC; "" in the one-region stack (SimpleSnitch, SimpleStrategy).
    datacenter: str = ""
    kafka_partitions: int = 0
    witness: bool = False

    def name(self, component: str) -> str:
        return f"{self.prefix}{component}"


def stack_sites(config: LocalConfig, spec: SpecValues) -> list[Site]:
    """The sites of the stack, in spec order (a multi-region stack: the witness last)."""
    if not spec.multi_region:
        return [
            Site(spec.region, config.ports, config.ports, kafka_partitions=spec.kafka_partitions)
        ]
    shared = config.ports
    sites = [
        Site(
            region.name,
            config.region_ports(i),
            shared,
            prefix=f"{region.name}/",
            cassandra_host=CASSANDRA_NODE_HOSTS[i],
            datacenter=region.name,
            kafka_partitions=region.kafka_partitions,
        )
        for i, region in enumerate(spec.regions)
    ]
    witness_host = CASSANDRA_NODE_HOSTS[len(sites)]
    sites.append(
        Site(
            WITNESS_DC,
            shared,
            shared,
            prefix=f"{WITNESS_DC}/",
            cassandra_host=witness_host,
            datacenter=WITNESS_DC,
            kafka_partitions=spec.kafka_partitions,  # unused: it runs no Kafka
            witness=True,
        )
    )
    return sites


def resolve_state_dir(state_dir: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The state dir: explicit argument > $OPSCTL_LOCAL_STATE_DIR > .state/local."""
    env = os.environ if env is None else env
    if state_dir is None:
        state_dir = Path(env[ENV_STATE_DIR]) if env.get(ENV_STATE_DIR) else DEFAULT_STATE_DIR
    return state_dir.expanduser().resolve()


def resolve_config(
    *,
    state_dir: Path | None = None,
    base_port: int | None = None,
    port_overrides: Mapping[str, int] | None = None,
    gateways: int | None = None,
    im: bool = True,
    infra_dir: Path | None = None,
    rule_globs: tuple[str, ...] | None = None,
    kubeconfig: Path | None = None,
    kube_context: str | None = None,
    exporters: bool = True,
    spec_stack: str | None = None,
    regions: int = 1,
    env: Mapping[str, str] | None = None,
) -> LocalConfig:
    """Build the config: explicit argument > environment variable > default.

    ``spec_stack`` names the stack spec to run (default ``local``), ``regions`` how many
    regions it has (a multi-region stack defaults to one gateway per region).
    """
    env = os.environ if env is None else env
    if kubeconfig is None and env.get(ENV_KUBECONFIG):
        kubeconfig = Path(env[ENV_KUBECONFIG])
    if kube_context is None and env.get(ENV_KUBE_CONTEXT):
        kube_context = env[ENV_KUBE_CONTEXT]
    if kube_context is not None and kubeconfig is None:
        raise UserInputError(
            "--context needs --kubeconfig: kube-state-metrics only runs against a given cluster"
        )
    if kubeconfig is not None:
        kubeconfig = _check_kubeconfig(kubeconfig.expanduser().resolve(), kube_context)
    if base_port is None:
        base_port = _env_int(env, ENV_BASE_PORT, DEFAULT_BASE_PORT)
    block = PORT_BLOCK_SIZE * regions  # one block per region
    if not 1024 <= base_port <= 65535 - block:
        raise UserInputError(
            f"base port {base_port} is out of range: it must be 1024..{65535 - block}"
            f" (the stack uses {block} ports from it)"
        )
    if gateways is None:
        default = DEFAULT_GATEWAYS if regions == 1 else DEFAULT_REGION_GATEWAYS
        gateways = _env_int(env, ENV_GATEWAYS, default)
    values: dict[str, object] = {
        "state_dir": resolve_state_dir(state_dir, env),
        "ports": Ports.from_base(base_port, port_overrides),
        "gateways": gateways,
        "im": im,
        "exporters": exporters,
        "kubeconfig": kubeconfig,
        "kube_context": kube_context,
    }
    if infra_dir is not None:
        values["infra_dir"] = infra_dir
    if spec_stack is not None:
        values["spec_stack"] = spec_stack
    if rule_globs is not None:
        values["rule_globs"] = rule_globs
    try:
        return LocalConfig.model_validate(values)
    except ValidationError as exc:
        raise _input_error("local stack config", exc) from None


def _check_kubeconfig(path: Path, context: str | None) -> Path:
    """The kubeconfig must be readable YAML and hold the context asked for (or a current one)."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserInputError(f"--kubeconfig {path}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserInputError(f"--kubeconfig {path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise UserInputError(f"--kubeconfig {path}: not a kubeconfig (expected a mapping)")
    contexts = [
        entry.get("name")
        for entry in document.get("contexts") or []
        if isinstance(entry, dict) and entry.get("name")
    ]
    wanted = context or document.get("current-context")
    if not wanted:
        raise UserInputError(
            f"--kubeconfig {path}: no current-context set; name one with --context",
            hint=f"contexts in the file: {', '.join(map(str, contexts)) or 'none'}",
        )
    if wanted not in contexts:
        raise UserInputError(
            f"--kubeconfig {path}: context '{wanted}' not found",
            hint=f"contexts in the file: {', '.join(map(str, contexts)) or 'none'}",
        )
    return path


def parse_port_overrides(items: list[str]) -> dict[str, int]:
    """``["kafka=19501", ...]`` from repeated --port flags."""
    overrides: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise UserInputError(f"--port {item!r}: expected NAME=PORT, e.g. kafka=19501")
        overrides[name.strip().replace("-", "_")] = int(value)
    return overrides


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserInputError(f"{name}={raw!r}: not an integer") from None


def _input_error(what: str, exc: ValidationError) -> UserInputError:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        problems.append(f"{where}: {error['msg']}" if where else error["msg"])
    return UserInputError(f"invalid {what}: " + "; ".join(problems))


def jvm_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """The Kafka/Cassandra versions pinned in scripts/setup/jars/versions.env."""
    versions: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        versions[key.strip()] = value.strip()
    return versions
