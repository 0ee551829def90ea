"""LocalStack: bring the local IM stack up, report on it, take it down.

Everything lives under one state dir: the recorded config (stack.json), per-component config and
data, pid files, logs and the local JWT secret. `up` is idempotent; if anything fails to come up,
everything is stopped again and the error names the component and shows its log tail.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from opsctl.errors import ToolMissing, UserInputError
from opsctl.local._cassandra_auth import ensure_roles, grant_app
from opsctl.local._components import (
    Component,
    Layout,
    Migration,
    Phase,
    alert_webhook_url,
    base_env,
    build_components,
    imgw_env,
    migrations,
    redis_url,
)
from opsctl.local._config import (
    ENV_MARKER,
    HOST,
    LocalConfig,
    Ports,
    Site,
    SpecValues,
    stack_sites,
)
from opsctl.local._errors import (
    ComponentFailed,
    PortInUse,
    StackConflict,
    StackNotRunning,
    UnknownComponent,
)
from opsctl.local._exporters import check_exporters, exporter_metrics_urls
from opsctl.local._jvm import MIRRORMAKER_JARS, check_jars
from opsctl.local._procs import (
    LOG_TAIL_LINES,
    PidRecord,
    Spawned,
    child_exit_code,
    is_alive,
    port_free,
    port_holder,
    read_pid_file,
    read_tail,
    run_once,
    running_record,
    spawn,
    sweep,
    terminate,
    terminate_many,
)
from opsctl.poll import WaitTimeout, wait_until
from opsctl.spec import load_stack

MIGRATE = "migrate"
HEALTH_PROBE_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 0.2
PORT_RELEASE_GRACE_S = 5.0
# What `down --wipe` may delete: only what `up` creates, never anything else in the directory.
_OWNED_ENTRIES = (
    "stack.json",
    "logs",
    "run",
    "secrets",
    "redis",
    "redis-replica",
    "kafka",
    "cassandra",
    "prometheus",
    "alertmanager",
    "kube-state-metrics",
)


class Reporter(Protocol):
    """Progress sink: one line per component (the CLI renders it with Rich)."""

    def begin(self, name: str, action: str) -> None: ...

    def done(self, name: str, ok: bool, summary: str) -> None: ...

    def close(self) -> None: ...


class NullReporter:
    def begin(self, name: str, action: str) -> None:
        pass

    def done(self, name: str, ok: bool, summary: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    port: int
    endpoint: str
    running: bool
    healthy: bool
    detail: str
    region: str = ""  # a multi-region stack's region ("witness", or "" when shared)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RegionInfo:
    """How to reach one region of the stack: its gateways, dispatcher, Kafka, Redis and its
    Cassandra node (of its own DC)."""

    name: str
    datacenter: str  # "" in the one-region stack (SimpleStrategy)
    gateway_ids: tuple[str, ...]
    gateway_ws_urls: tuple[str, ...]
    gateway_http_urls: tuple[str, ...]
    dispatcher_url: str
    redis_url: str
    kafka_bootstrap: str
    kafka_topic: str
    kafka_partitions: int
    cassandra_host: str
    cassandra_port: int

    @property
    def cassandra_hosts(self) -> str:
        return f"{self.cassandra_host}:{self.cassandra_port}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("gateway_ids", "gateway_ws_urls", "gateway_http_urls"):
            data[key] = list(data[key])
        return data


@dataclass(frozen=True)
class StackInfo:
    """How to reach the running stack (what tests and tools need).

    The flat fields describe the first region; ``regions`` lists every region (one for the
    one-region stack). The JWT settings are shared: a token works in every region.
    """

    state_dir: Path
    gateway_ids: tuple[str, ...]
    gateway_ws_urls: tuple[str, ...]
    gateway_http_urls: tuple[str, ...]
    dispatcher_url: str
    redis_url: str
    kafka_bootstrap: str
    kafka_topic: str
    kafka_partitions: int
    cassandra_host: str
    cassandra_port: int
    cassandra_keyspace: str
    prometheus_url: str
    alertmanager_url: str
    alert_webhook_url: str
    jwt_secret_file: Path
    jwt_issuer: str
    jwt_audience: str
    # Exporters (empty when the stack runs without them).
    redis_replica_url: str | None = None
    metrics_urls: dict[str, tuple[str, ...]] = field(default_factory=dict)
    stack: str = "local"
    regions: tuple[RegionInfo, ...] = ()

    @property
    def cassandra_hosts(self) -> str:
        return f"{self.cassandra_host}:{self.cassandra_port}"

    def region(self, name: str) -> RegionInfo:
        for region in self.regions:
            if region.name == name:
                return region
        known = ", ".join(region.name for region in self.regions)
        raise KeyError(f"no region '{name}' in the stack (regions: {known})")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["jwt_secret_file"] = str(self.jwt_secret_file)
        data["gateway_ids"] = list(self.gateway_ids)
        data["gateway_ws_urls"] = list(self.gateway_ws_urls)
        data["gateway_http_urls"] = list(self.gateway_http_urls)
        data["metrics_urls"] = {job: list(urls) for job, urls in self.metrics_urls.items()}
        data["regions"] = [region.as_dict() for region in self.regions]
        return data


@dataclass(frozen=True)
class _Starting:
    component: Component
    spawned: Spawned
    popen_pid: int
    started: float
    already_running: bool


class LocalStack:
    """The local stack of one state dir. Safe to drive from the CLI, tests or scripts."""

    def __init__(
        self,
        config: LocalConfig,
        *,
        reporter: Reporter | None = None,
        spec: SpecValues | None = None,
    ) -> None:
        """``spec`` defaults to the values read from the stack spec (infra/Pulumi.local.yaml)."""
        self.config = config
        self.layout = Layout(config.state_dir)
        self.reporter: Reporter = reporter or NullReporter()
        self._spec = spec
        self._components: list[Component] | None = None

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def recorded(cls, state_dir: Path, *, reporter: Reporter | None = None) -> LocalStack:
        """The stack last brought up in ``state_dir``, exactly as it was started (its recorded
        config and spec values), so down/status work even if the spec changed since."""
        recorded = read_recorded(state_dir)
        if recorded is None:
            raise StackNotRunning(
                f"no local stack in {state_dir}: nothing was started there",
                hint="start one with `opsctl local up`",
            )
        config, spec = recorded
        return cls(config, reporter=reporter, spec=spec)

    @property
    def marker(self) -> str:
        return str(self.config.state_dir)

    @property
    def spec(self) -> SpecValues:
        if self._spec is None:
            self._spec = SpecValues.from_spec(
                load_stack(self.config.infra_dir, self.config.spec_stack), self.config.spec_stack
            )
        return self._spec

    @property
    def multi_region(self) -> bool:
        return self.spec.multi_region

    def sites(self) -> list[Site]:
        return stack_sites(self.config, self.spec)

    def components(self) -> list[Component]:
        if self._components is None:
            self._components = build_components(self.config, self.spec)
        return self._components

    def component(self, name: str) -> Component:
        for component in self.components():
            if component.name == name:
                return component
        raise UnknownComponent(name, self.names())

    def names(self) -> list[str]:
        return [component.name for component in self.components()]

    def region_infos(self) -> tuple[RegionInfo, ...]:
        config = self.config
        return tuple(
            RegionInfo(
                name=site.region,
                datacenter=site.datacenter,
                gateway_ids=tuple(config.gateway_ids),
                **_im_endpoints(site.ports, config.gateways),
                kafka_topic=config.kafka_topic,
                kafka_partitions=site.kafka_partitions,
                cassandra_host=site.cassandra_host,
                cassandra_port=site.shared.cassandra,
            )
            for site in self.sites()
            if not site.witness
        )

    @property
    def info(self) -> StackInfo:
        config, ports = self.config, self.config.ports
        sites = self.sites() if self.multi_region else None
        return StackInfo(
            state_dir=config.state_dir,
            gateway_ids=tuple(config.gateway_ids),
            **_im_endpoints(ports, config.gateways),
            kafka_topic=config.kafka_topic,
            kafka_partitions=self.spec.kafka_partitions,
            cassandra_host=HOST,
            cassandra_port=ports.cassandra,
            cassandra_keyspace=config.cassandra_keyspace,
            prometheus_url=f"http://{HOST}:{ports.prometheus}",
            alertmanager_url=f"http://{HOST}:{ports.alertmanager}",
            alert_webhook_url=alert_webhook_url(config),
            jwt_secret_file=self.layout.secret,
            jwt_issuer=config.jwt_issuer,
            jwt_audience=config.jwt_audience,
            redis_replica_url=redis_url(ports.redis_replica) if config.exporters else None,
            metrics_urls=exporter_metrics_urls(config, sites, mirrormaker=self.multi_region),
            stack=config.spec_stack,
            regions=self.region_infos(),
        )

    def imgw_env(self, region: str | None = None) -> dict[str, str]:
        """The IMGW_* settings the stack gives its IM processes (for tools and tests);
        ``region``: that region's, in a multi-region stack (default: the first region's)."""
        if not self.multi_region:
            return imgw_env(self.config, self.spec, self.layout)
        wanted = region or self.spec.region
        for site in self.sites():
            if site.region == wanted and not site.witness:
                return imgw_env(self.config, self.spec, self.layout, site)
        raise UserInputError(
            f"no region '{wanted}' in the stack",
            hint=f"regions: {', '.join(self.spec.region_names)}",
        )

    def redis_kwargs(self, user: str = "admin") -> dict[str, Any]:
        """Arguments for redis-py (``Redis.from_url(info.redis_url, **kwargs)``) that log in
        as ``user`` (default: ``admin``, the operator's login) over verified TLS: the one
        place tools and tests get Redis credentials from."""
        login = self.layout.redis_login(user)
        return {
            "username": login.user,
            "password": login.password_file.read_text(encoding="utf-8").strip(),
            "ssl_ca_certs": str(login.ca_file),
            "ssl_cert_reqs": "required",
        }

    # ---- up ----------------------------------------------------------------------------------

    def up(self) -> StackInfo:
        """Start whatever is not running yet and wait until every component is healthy."""
        components = self._preflight()
        had_pid_file = {c.name for c in components if self.layout.pid(c.name).exists()}
        running = {c.name: running_record(self.layout.pid(c.name)) for c in components}
        if any(running.values()):
            self._check_same_config()
        for component in components:
            if running[component.name] is None:
                # A component that just died may take a moment to release its port.
                grace = PORT_RELEASE_GRACE_S if component.name in had_pid_file else 0.0
                _require_port(component, grace)
        # Nothing has changed so far; from here on a failure rolls everything back.
        self._prepare_state_dir()
        try:
            for phase in sorted({c.phase for c in components}):
                members = [c for c in components if c.phase == phase]
                starting = [c for c in members if running[c.name] is None]
                if phase == Phase.IM and starting:
                    self._migrate()
                for wave in sorted({c.wave for c in members}):
                    self._start_phase([c for c in members if c.wave == wave], running)
                if phase == Phase.INFRA:
                    self._secure_cassandra()
        except BaseException:
            self.reporter.close()
            self._rollback()
            raise
        self.reporter.close()
        return self.info

    def _preflight(self) -> list[Component]:
        config = self.config
        tools = {
            "redis-server": (config.redis_server, "redis-server"),
            "prometheus": (config.prometheus, "prometheus"),
            "alertmanager": (config.alertmanager, "prometheus-alertmanager"),
            "java": (config.java, "openjdk-17-jre-headless"),
        }
        for tool, (path, package) in tools.items():
            if not os.access(path, os.X_OK):
                raise ToolMissing(
                    f"{tool} not found at {path}",
                    hint=f"run `make setup` (installs the Debian package {package})",
                )
        if config.im:
            missing = [
                name
                for name in ("server", "dispatcher", "migrate")
                if not (config.repo_root / "gateway" / f"{name}.py").is_file()
            ]
            if missing:
                raise ToolMissing(
                    "the IM processes are not available: "
                    + ", ".join(f"gateway/{name}.py" for name in missing)
                    + " missing",
                    hint="start only the infrastructure with --infra-only",
                )
            if not os.access(config.python, os.X_OK):
                raise ToolMissing(f"python not found at {config.python}", hint="run `make setup`")
        spec = self.spec  # loads the spec: an unknown stack or too many regions fail here
        check_jars(config, (MIRRORMAKER_JARS,) if spec.multi_region and config.im else ())
        check_exporters(config)
        return self.components()

    def _check_same_config(self) -> None:
        recorded = load_recorded(self.config.state_dir)
        if recorded is None or recorded == self.config:
            return
        mine, theirs = self.config.model_dump(), recorded.model_dump()
        changed = sorted(key for key in mine if mine[key] != theirs.get(key))
        raise StackConflict(
            f"a stack is already running in {self.config.state_dir} with a different "
            f"configuration ({', '.join(changed)} differ)",
            hint="run `opsctl local down` first, or use another --state-dir",
        )

    def _prepare_state_dir(self) -> None:
        root = self.config.state_dir
        for sub in ("logs", "run"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._ensure_secret()
        self.layout.secrets.ensure()
        recorded = self.config.recorded_file()
        tmp = recorded.with_suffix(".tmp")
        document = {"config": self.config.model_dump(mode="json"), "spec": asdict(self.spec)}
        tmp.write_text(json.dumps(document, indent=2), encoding="utf-8")
        tmp.replace(recorded)

    def _ensure_secret(self) -> None:
        path = self.layout.secret
        if path.is_file():
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(48))

    def _start_phase(self, members: list[Component], running: dict[str, PidRecord | None]) -> None:
        starting: list[_Starting] = []
        for component in members:
            record = running[component.name]
            if record is None:
                starting.append(self._spawn(component))
                continue
            # Running already (e.g. a second `up` while the first one still starts): it still
            # has to become healthy, but it is not started again.
            self.reporter.begin(component.name, f"already running (pid {record.pid})")
            log_size = _size(self.layout.log(component.name))
            spawned = Spawned(record, log_size)
            starting.append(_Starting(component, spawned, record.pid, time.monotonic(), True))
        self._wait_healthy(starting)

    def _spawn(self, component: Component) -> _Starting:
        self.reporter.begin(component.name, f"starting on {HOST}:{component.port}")
        started = time.monotonic()
        log_file = self.layout.log(component.name)
        argv = component.argv
        if component.prepare is not None:
            argv = component.prepare() or argv
        spawned = spawn(
            argv,
            env={**base_env(), **component.env},
            cwd=component.cwd or self.config.state_dir,
            log_file=log_file,
            pid_file=self.layout.pid(component.name),
            stack_marker=self.marker,
        )
        return _Starting(component, spawned, spawned.record.pid, started, False)

    def _wait_healthy(self, starting: list[_Starting]) -> None:
        # Not opsctl.poll.wait_until: each round checks several components, each against its
        # own start timeout, reports the healthy ones and fails fast on one that exited.
        pending = list(starting)
        while pending:
            for entry in list(pending):
                component, elapsed = entry.component, time.monotonic() - entry.started
                exit_code = child_exit_code(entry.popen_pid)
                if exit_code is not None:
                    how = "exited" if exit_code == -1 else f"exited with code {exit_code}"
                    self._fail(entry, f"{how} after {elapsed:.1f}s")
                health = component.health(HEALTH_PROBE_TIMEOUT_S)
                if health.ok:
                    summary = f"healthy in {elapsed:.1f}s ({component.endpoint})"
                    if entry.already_running:
                        summary = f"already running (pid {entry.popen_pid}), healthy"
                    self.reporter.done(component.name, True, summary)
                    pending.remove(entry)
                elif elapsed > component.start_timeout_s:
                    self._fail(
                        entry,
                        f"not healthy after {component.start_timeout_s:.0f}s "
                        f"({component.health.describe()}: {health.detail})",
                    )
            if pending:
                time.sleep(POLL_INTERVAL_S)

    def _fail(self, entry: _Starting, reason: str) -> None:
        name = entry.component.name
        self.reporter.done(name, False, reason)
        log_file = self.layout.log(name)
        tail = read_tail(log_file, LOG_TAIL_LINES, entry.spawned.log_offset)
        raise ComponentFailed(name, reason, str(log_file), tail)

    def migrations(self) -> list[Migration]:
        return migrations(self.config, self.spec, self.layout)

    def _migrate(self) -> None:
        # One after the other: each run adds its DC to the keyspace's replication.
        for step in self.migrations():
            self._migrate_once(step)
        keyspaces = [self.config.cassandra_keyspace, self._control_keyspace()]
        self._cassandra_step(
            "cassandra-grants",
            "letting the gateway and dispatcher roles read and write " + ", ".join(keyspaces),
            lambda: grant_app(self._cassandra_contact(), self.layout.secrets, keyspaces),
        )

    def _secure_cassandra(self) -> None:
        """Cassandra's roles, as prod's (opsctl.local._cassandra_auth), once its nodes run."""
        sites = self.sites()
        datacenters = [site.datacenter for site in sites] if self.multi_region else []
        self._cassandra_step(
            "cassandra-roles",
            "setting up the roles",
            lambda: ensure_roles(self._cassandra_contact(), self.layout.secrets, datacenters),
        )

    def _cassandra_step(self, name: str, what: str, run: Callable[[], None]) -> None:
        self.reporter.begin(name, what)
        started = time.monotonic()
        try:
            run()
        except Exception as exc:  # the driver's errors vary; none carries a password
            reason = f"{type(exc).__name__}: {exc}"
            self.reporter.done(name, False, reason)
            log = self.layout.log(self.sites()[0].name("cassandra"))
            raise ComponentFailed(name, reason, str(log), read_tail(log, 20)) from exc
        self.reporter.done(name, True, f"done in {time.monotonic() - started:.1f}s")

    def _cassandra_contact(self) -> list[tuple[str, int]]:
        port = self.config.ports.cassandra
        if not self.multi_region:
            return [(HOST, port)]
        return [(site.cassandra_host, port) for site in self.sites()]

    def _control_keyspace(self) -> str:
        from gateway.config import Config

        return str(Config.model_fields["cassandra_control_keyspace"].default)

    def cassandra_auth(self, role: str = "admin") -> Any:
        """A gateway.store.CassandraAuth of ``role`` (default ``admin``) for
        ``CassandraStore(..., auth=...)``: the one place tools and tests get it from."""
        from gateway.store import CassandraAuth

        secrets = self.layout.secrets
        return CassandraAuth(role, secrets.cassandra_password(role), str(secrets.ca_cert))

    def cassandra_kwargs(self, role: str = "admin") -> dict[str, Any]:
        """Arguments for the driver (``Cluster([...], port=..., **kwargs)``) that log in as
        ``role`` (default ``admin``) over verified TLS."""
        return dict(self.cassandra_auth(role).cluster_kwargs())

    def _migrate_once(self, step: Migration) -> None:
        what = (
            "applying CQL migrations"
            if "--only" in step.argv
            else "creating topics, applying CQL migrations"
        )
        self.reporter.begin(step.name, what)
        started = time.monotonic()
        env = {
            **base_env(),
            **step.env,
            "IMGW_NODE_ID": "migrate",
            ENV_MARKER: self.marker,
        }
        try:
            run_once(
                step.name,
                step.argv,
                self.layout.log(step.name),
                timeout_s=180,
                env=env,
                cwd=self.config.repo_root,
            )
        except ComponentFailed as failure:
            self.reporter.done(step.name, False, failure.reason)
            raise
        self.reporter.done(step.name, True, f"done in {time.monotonic() - started:.1f}s")

    def _rollback(self) -> None:
        self._stop_all(report=False)

    # ---- down --------------------------------------------------------------------------------

    def down(self, *, wipe: bool = False) -> list[str]:
        """Stop every process of the stack (reverse order); ``wipe`` also deletes its data.

        Returns the names of the components that were running.
        """
        stopped = self._stop_all(report=True)
        self.reporter.close()
        if wipe:
            self.wipe()
        return stopped

    def _stop_all(self, *, report: bool) -> list[str]:
        components = self.components()
        stopped: list[str] = []
        for group in sorted({c.stop_group for c in components}):
            members = [c for c in reversed(components) if c.stop_group == group]
            records: list[PidRecord] = []
            for component in members:
                record = running_record(self.layout.pid(component.name))
                if record is not None:
                    records.append(record)
                    stopped.append(component.name)
                    if report:
                        self.reporter.begin(component.name, f"stopping pid {record.pid}")
            if records:
                started = time.monotonic()
                terminate_many(records, max(c.stop_timeout_s for c in members))
                if report:
                    for component in members:
                        if component.name in stopped:
                            elapsed = time.monotonic() - started
                            self.reporter.done(component.name, True, f"stopped in {elapsed:.1f}s")
            for component in members:
                self.layout.pid(component.name).unlink(missing_ok=True)
        # Anything that escaped its pid file still carries the stack's marker.
        sweep(self.marker)
        return stopped

    def wipe(self) -> None:
        """Delete the stack's data, configs, logs and secret (only entries `up` creates)."""
        if any(self.running().values()):
            raise UserInputError(
                f"the stack in {self.config.state_dir} is running; stop it before wiping"
            )
        root = self.config.state_dir
        # A multi-region stack's components live under <region>/ (and witness/, mirrormaker/).
        named = {name.split("/", 1)[0] for name in self.names()}
        for entry in sorted({*_OWNED_ENTRIES, *named}):
            path = root / entry
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()

    # ---- status and single components --------------------------------------------------------

    def running(self) -> dict[str, PidRecord | None]:
        """Component -> its live process (read-only: stale pid files are left alone)."""
        result: dict[str, PidRecord | None] = {}
        for component in self.components():
            record = read_pid_file(self.layout.pid(component.name))
            result[component.name] = record if record is not None and is_alive(record) else None
        return result

    def status(self) -> list[ComponentStatus]:
        rows = []
        running = self.running()
        for component in self.components():
            record = running[component.name]
            if record is None:
                health_ok, detail = False, "not running"
            else:
                health = component.health(HEALTH_PROBE_TIMEOUT_S)
                health_ok, detail = health.ok, health.detail
            rows.append(
                ComponentStatus(
                    name=component.name,
                    pid=record.pid if record else None,
                    port=component.port,
                    endpoint=component.endpoint,
                    running=record is not None,
                    healthy=health_ok,
                    detail=detail,
                    region=component.region,
                )
            )
        return rows

    def pid(self, name: str) -> int | None:
        self.component(name)
        record = self.running()[name]
        return record.pid if record else None

    def stop(self, name: str, *, kill: bool = False) -> bool:
        """Stop one component (SIGTERM, or SIGKILL with ``kill``). False if it was not running."""
        component = self.component(name)
        record = running_record(self.layout.pid(name))
        if record is None:
            return False
        terminate(record, component.stop_timeout_s, hard=kill)
        self.layout.pid(name).unlink(missing_ok=True)
        # so a start right after works
        _wait_port_free(component.port, PORT_RELEASE_GRACE_S, component.host)
        return True

    def kill(self, name: str) -> bool:
        """SIGKILL one component, as a crash would."""
        return self.stop(name, kill=True)

    def start(self, name: str) -> None:
        """Start one stopped component and wait until it is healthy (no-op if running)."""
        component = self.component(name)
        if running_record(self.layout.pid(name)) is not None:
            return
        _require_port(component, PORT_RELEASE_GRACE_S)
        self._wait_healthy([self._spawn(component)])

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def log_file(self, name: str) -> Path:
        if name not in {step.name for step in self.migrations()}:
            self.component(name)
        return self.layout.log(name)

    def tail(self, name: str, lines: int) -> list[str]:
        return read_tail(self.log_file(name), lines)

    def follow(self, name: str, lines: int, poll_s: float = 0.5) -> Iterator[str]:
        """The last ``lines`` lines, then every new line as it is written (until closed)."""
        path = self.log_file(name)
        position = path.stat().st_size if path.exists() else 0
        yield from read_tail(path, lines)
        buffer = b""
        while True:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size < position:  # truncated or wiped: start over
                position = 0
            if size > position:
                with path.open("rb") as handle:
                    handle.seek(position)
                    buffer += handle.read(size - position)
                position = size
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    yield raw.decode("utf-8", errors="replace")
            else:
                time.sleep(poll_s)


def _im_endpoints(ports: Ports, gateways: int) -> dict[str, Any]:
    """Where clients and tools reach one region's IM processes, Redis and Kafka."""
    return {
        "gateway_ws_urls": tuple(f"ws://{HOST}:{ports.gateway(i)}/ws" for i in range(gateways)),
        "gateway_http_urls": tuple(f"http://{HOST}:{ports.gateway(i)}" for i in range(gateways)),
        "dispatcher_url": f"http://{HOST}:{ports.dispatcher}",
        "redis_url": redis_url(ports.redis),
        "kafka_bootstrap": f"{HOST}:{ports.kafka}",
    }


def _wait_port_free(port: int, timeout_s: float, host: str = HOST) -> bool:
    try:
        wait_until(
            f"port {host}:{port} to be free",
            lambda: port_free(port, host),
            timeout=timeout_s,
            interval=0.05,
        )
    except WaitTimeout:
        return False
    return True


def _require_port(component: Component, grace_s: float) -> None:
    if not _wait_port_free(component.port, grace_s, component.host):
        raise PortInUse(component.name, component.port, port_holder(component.port))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def load_recorded(state_dir: Path) -> LocalConfig | None:
    """The config of the stack last brought up in ``state_dir``, if any."""
    recorded = read_recorded(state_dir)
    return recorded[0] if recorded else None


def read_recorded(state_dir: Path) -> tuple[LocalConfig, SpecValues] | None:
    path = state_dir / "stack.json"
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return LocalConfig.model_validate(document["config"]), SpecValues.from_json(
            document["spec"]
        )
    except (ValidationError, OSError, ValueError, KeyError, TypeError) as exc:
        raise UserInputError(
            f"{path}: not a valid recorded local stack: {exc}",
            hint="stop leftovers by hand and remove the state dir",
        ) from exc


__all__ = [
    "ComponentStatus",
    "LocalStack",
    "NullReporter",
    "RegionInfo",
    "Reporter",
    "StackInfo",
    "load_recorded",
]
