"""Typed configuration from IMGW_* environment variables, validated before anything starts.

A bad value fails fast: the entry points print every problem (variable name and what is wrong)
and exit 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PREFIX = "IMGW_"
Role = Literal["gateway", "dispatcher", "migrate", "relay", "shardmap"]

_ID = r"^[A-Za-z0-9_.-]{1,64}$"
# The SASL mechanism of every Kafka login (the builders' KafkaUsers and the local brokers).
KAFKA_SASL_MECHANISM = "SCRAM-SHA-512"
_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")

# Variables each role cannot run without (the others have defaults).
REQUIRED: dict[Role, tuple[str, ...]] = {
    "gateway": ("node_id", "listen_port", "kafka_bootstrap", "redis_url", "cassandra_hosts"),
    "dispatcher": ("node_id", "listen_port", "kafka_bootstrap", "redis_url", "cassandra_hosts"),
    "migrate": ("kafka_bootstrap", "cassandra_hosts"),
    "relay": ("node_id", "listen_port", "kafka_bootstrap", "redis_url", "cassandra_hosts"),
    "shardmap": ("cassandra_hosts",),
}


class ConfigError(Exception):
    """One or more IMGW_* variables are missing or invalid."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{var}: {msg}" for var, msg in problems))


class Config(BaseModel):
    """Every knob of the gateway, the dispatcher and migrate. Field x <- env IMGW_X."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: str = Field("", pattern=r"^$|" + _ID)
    # The stack spec's region name: in the consumer group id, the dispatcher's writer token
    # (seq fencing) and the metrics. No ':' (the writer token is '<region>:<generation>:<p>').
    region: str = Field("local", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    # Every region of the stack, comma-separated (empty: just ``region``). The shard map's
    # first homes are rendezvous over these; the dispatcher also consumes ``<peer>.<topic>``
    # (MirrorMaker 2's DefaultReplicationPolicy) and the relay ``<peer>.<deliveries topic>``
    # for every other one (docs/multi-region.md sections 2, 3 and 6).
    regions: str = Field("", pattern=r"^$|^[a-z0-9][a-z0-9-]{0,62}(,[a-z0-9][a-z0-9-]{0,62})*$")
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(0, ge=0, le=65535)

    kafka_bootstrap: str = ""
    kafka_topic: str = Field("im.messages", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    kafka_partitions: int = Field(6, ge=1, le=10000)
    kafka_replication_factor: int = Field(1, ge=1, le=16)
    kafka_linger_ms: int = Field(3, ge=0, le=1000)
    # Empty: ``im-dispatcher.<region>`` (region-qualified, docs/multi-region.md section 3).
    kafka_consumer_group: str = Field("", pattern=r"^$|^[A-Za-z0-9._-]{1,200}$")
    # Persisted messages for the other regions' relays (produced only when there are peers).
    kafka_deliveries_topic: str = Field("im.deliveries", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    # The SCRAM-SHA-512 user and its password's file (a mounted Secret: never the value in the
    # environment); the CA that signed the brokers' certificates. A CA turns on TLS; a user
    # requires it (SASL_SSL: the SCRAM exchange and the records never cross the network in
    # plain text).
    kafka_username: str = Field("", pattern=r"^$|^[A-Za-z0-9_.-]{1,64}$")
    kafka_password_file: Path | None = None
    kafka_ca_file: Path | None = None

    redis_url: str = ""
    # The URL names one seed node of a Redis Cluster (the sharded production regions).
    redis_cluster: bool = False
    # The ACL user and its password's file (a mounted Secret: never the value in the
    # environment); the CA that signed the server's certificate (rediss:// only).
    redis_username: str = Field("", pattern=r"^$|^[A-Za-z0-9_.-]{1,64}$")
    redis_password_file: Path | None = None
    redis_ca_file: Path | None = None

    cassandra_hosts: str = ""
    # A PasswordAuthenticator role and its password's file (a mounted Secret); the CA that
    # signed the nodes' client certificates: set, the driver speaks TLS and verifies them.
    cassandra_username: str = Field("", pattern=r"^$|^[A-Za-z0-9_.-]{1,64}$")
    cassandra_password_file: Path | None = None
    cassandra_ca_file: Path | None = None
    cassandra_keyspace: str = Field("im", pattern=r"^[a-z][a-z0-9_]{0,47}$")
    cassandra_replication_factor: int = Field(1, ge=1, le=16)
    cassandra_datacenter: str = ""  # set -> NetworkTopologyStrategy {dc: rf}; empty -> Simple
    cassandra_bucket_s: int = Field(86400, ge=60)  # width of a message partition in time
    # The shard map, held records and dispatcher epochs (docs/multi-region.md section 2).
    cassandra_control_keyspace: str = Field("im_control", pattern=r"^[a-z][a-z0-9_]{0,47}$")

    jwt_hs256_secret_file: Path | None = None
    # The IdP's RSA keys (gateway/jwks.py): a file (a mounted Secret) or the IdP's jwks_uri
    # (https; http only on loopback, for tests), at most one. Either one requires jwt_issuer
    # and jwt_audience. Reloaded every jwt_jwks_refresh_s (jittered), and on a token with an
    # unknown kid at most once per jwt_jwks_min_refresh_s.
    jwt_jwks_file: Path | None = None
    jwt_jwks_url: str = ""
    jwt_jwks_refresh_s: float = Field(300.0, ge=1, le=86400)
    jwt_jwks_min_refresh_s: float = Field(30.0, gt=0, le=3600)
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_leeway_s: float = Field(30.0, ge=0, le=600)

    drain_window_s: float = Field(10.0, ge=0, le=3600)
    max_connections: int = Field(50000, ge=1)
    # Per process: sockets not yet authenticated (upgraded, no valid hello yet), connections
    # from one client IP (0: no limit), and sessions (distinct devices) of one user.
    max_pending_hellos: int = Field(1000, ge=1)
    max_connections_per_ip: int = Field(256, ge=0)
    max_sessions_per_user: int = Field(16, ge=1, le=10000)
    # Load balancers whose X-Forwarded-For is believed (CIDRs, comma-separated): behind them
    # the client IP is the last address in that header they did not add themselves.
    trusted_proxy_cidrs: str = ""
    max_frame_bytes: int = Field(65536, ge=512, le=16 * 1024 * 1024)
    rate_limit_per_s: float = Field(50.0, gt=0)
    rate_limit_burst: int = Field(100, ge=1)
    send_queue_max: int = Field(256, ge=1, le=100000)
    # Bytes a session may have queued (while its socket is backed up) before it is closed as
    # a slow consumer; a sync pages within sync_byte_budget of it, waiting for the client to
    # read, and gives up (closing the session) after sync_drain_timeout_s without progress.
    send_queue_max_bytes: int = Field(1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    sync_byte_budget: int = Field(256 * 1024, ge=16 * 1024, le=64 * 1024 * 1024)
    sync_drain_timeout_s: float = Field(30.0, gt=0, le=600)
    # After a lost pub/sub subscription, the sessions that may have missed deliveries are told
    # to sync in a random order spread over the window, at most this many per second.
    resync_window_s: float = Field(10.0, gt=0, le=600)
    resync_max_per_s: float = Field(200.0, gt=0, le=100000)
    heartbeat_interval_s: float = Field(25.0, gt=0)
    idle_timeout_s: float = Field(75.0, gt=0)
    hello_timeout_s: float = Field(10.0, gt=0)
    dedup_ttl_s: int = Field(86400, ge=60)
    route_ttl_s: int = Field(60, ge=5)
    recent_cache_size: int = Field(200, ge=0, le=10000)
    sync_limit: int = Field(500, ge=1, le=10000)
    max_group_members: int = Field(256, ge=2, le=100000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("kafka_bootstrap", "cassandra_hosts")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        if value == "":
            return value
        for raw_item in value.split(","):
            item = raw_item.strip()
            if not _HOST_PORT.match(item):
                raise ValueError(f"'{item}' is not host:port (comma-separated list expected)")
            port = int(item.rsplit(":", 1)[1])
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} out of range in '{item}'")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if value and not re.match(r"^rediss?://[^/\s]+(/\d+)?$", value):
            raise ValueError("expected redis://host:port/db")
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _jwks_url(cls, value: str) -> str:
        if value == "":
            return value
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if parts.scheme not in ("https", "http") or not parts.hostname or " " in value:
            raise ValueError("expected https://host[:port]/path")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("must be https (plain http is accepted only on loopback)")
        return value

    @field_validator(
        "jwt_hs256_secret_file",
        "jwt_jwks_file",
        "redis_password_file",
        "redis_ca_file",
        "kafka_password_file",
        "kafka_ca_file",
        "cassandra_password_file",
        "cassandra_ca_file",
    )
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is None or str(value) == "":
            return None
        if not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @property
    def consumer_group(self) -> str:
        """The dispatcher's Kafka consumer group: IMGW_KAFKA_CONSUMER_GROUP when set, else
        ``im-dispatcher.<region>``, so no two regions ever share a group (MirrorMaker 2's
        checkpoints of one region's group can then never be applied to another's)."""
        return self.kafka_consumer_group or f"im-dispatcher.{self.region}"

    @property
    def trusted_proxies(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(c.strip(), strict=False)
            for c in self.trusted_proxy_cidrs.split(",")
            if c.strip()
        )

    @property
    def region_list(self) -> list[str]:
        """Every region of the stack, this one included, without duplicates, in order."""
        names = [r for r in self.regions.split(",") if r]
        return list(dict.fromkeys(names)) if names else [self.region]

    @property
    def peers(self) -> list[str]:
        """The other regions (empty on a one-region stack)."""
        return [r for r in self.region_list if r != self.region]

    @property
    def relay_group(self) -> str:
        return f"im-relay.{self.region}"

    def kafka_kwargs(self) -> dict[str, Any]:
        """Connection arguments for every aiokafka client (producer, consumer, admin): the
        bootstrap servers and, when configured, TLS with this CA and the SCRAM login. The
        password is read from its file here, at start, and never logged."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.kafka_bootstrap}
        if self.kafka_ca_file is None:
            return kwargs
        kwargs["ssl_context"] = ssl.create_default_context(cafile=str(self.kafka_ca_file))
        kwargs["security_protocol"] = "SSL"
        if self.kafka_username and self.kafka_password_file is not None:
            password = self.kafka_password_file.read_text(encoding="utf-8").strip()
            kwargs |= {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": KAFKA_SASL_MECHANISM,
                "sasl_plain_username": self.kafka_username,
                "sasl_plain_password": password,
            }
        return kwargs

    def host_ports(
        self, field: Literal["kafka_bootstrap", "cassandra_hosts"]
    ) -> list[tuple[str, int]]:
        out = []
        for item in getattr(self, field).split(","):
            host, port = item.strip().rsplit(":", 1)
            out.append((host.strip("[]"), int(port)))
        return out


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def load(role: Role, env: Mapping[str, str] | None = None) -> Config:
    """Build the Config from env; raise ConfigError listing every problem by variable name."""
    env = os.environ if env is None else env
    known = set(Config.model_fields)
    raw: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for key, value in env.items():
        if not key.startswith(PREFIX):
            continue
        field = key[len(PREFIX) :].lower()
        if field not in known:
            problems.append((key, "unknown variable"))
        elif value != "":
            raw[field] = value
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            value = raw.get(field, "")
            problems.append((env_name(field), f"{error['msg']} (got {value!r})"))
        raise ConfigError(sorted(problems)) from None
    for field in REQUIRED[role]:
        missing = field not in raw if field == "listen_port" else not getattr(config, field)
        if missing:
            problems.append((env_name(field), "required"))
    if role == "gateway":
        problems.extend(_jwt_problems(config))
    if config.region not in config.region_list:
        problems.append(("IMGW_REGIONS", f"must include IMGW_REGION ({config.region!r})"))
    problems.extend(_login_problems(config))
    problems.extend(_session_problems(config))
    if problems:
        raise ConfigError(sorted(problems))
    return config


def _session_problems(config: Config) -> list[tuple[str, str]]:
    problems = []
    try:
        config.trusted_proxies  # noqa: B018 (parsed here so that a bad one is named at start)
    except ValueError as exc:
        problems.append(("IMGW_TRUSTED_PROXY_CIDRS", f"not a list of CIDRs: {exc}"))
    if config.idle_timeout_s <= config.heartbeat_interval_s:
        problems.append(("IMGW_IDLE_TIMEOUT_S", "must be greater than IMGW_HEARTBEAT_INTERVAL_S"))
    if config.sync_byte_budget > config.send_queue_max_bytes:
        problems.append(
            ("IMGW_SYNC_BYTE_BUDGET", "must not exceed IMGW_SEND_QUEUE_MAX_BYTES (the hard cap)")
        )
    return problems


def _login_problems(config: Config) -> list[tuple[str, str]]:
    problems = []
    if config.redis_ca_file is not None and config.redis_url.startswith("redis://"):
        problems.append(("IMGW_REDIS_CA_FILE", "set, but IMGW_REDIS_URL is not rediss:// (TLS)"))
    if config.redis_username and config.redis_password_file is None:
        problems.append(("IMGW_REDIS_PASSWORD_FILE", "required with IMGW_REDIS_USERNAME"))
    if config.kafka_username and config.kafka_password_file is None:
        problems.append(("IMGW_KAFKA_PASSWORD_FILE", "required with IMGW_KAFKA_USERNAME"))
    if config.kafka_password_file is not None and not config.kafka_username:
        problems.append(("IMGW_KAFKA_USERNAME", "required with IMGW_KAFKA_PASSWORD_FILE"))
    if config.kafka_username and config.kafka_ca_file is None:
        problems.append(
            ("IMGW_KAFKA_CA_FILE", "required with IMGW_KAFKA_USERNAME (SCRAM over TLS only)")
        )
    if config.cassandra_username and config.cassandra_password_file is None:
        problems.append(("IMGW_CASSANDRA_PASSWORD_FILE", "required with IMGW_CASSANDRA_USERNAME"))
    if config.cassandra_password_file is not None and not config.cassandra_username:
        problems.append(("IMGW_CASSANDRA_USERNAME", "required with IMGW_CASSANDRA_PASSWORD_FILE"))
    return problems


def _jwt_problems(config: Config) -> list[tuple[str, str]]:
    jwks = config.jwt_jwks_file is not None or bool(config.jwt_jwks_url)
    if not (config.jwt_hs256_secret_file or jwks):
        return [
            (
                "IMGW_JWT_HS256_SECRET_FILE",
                "set it, IMGW_JWT_JWKS_FILE or IMGW_JWT_JWKS_URL: tokens cannot be checked",
            )
        ]
    problems = []
    if config.jwt_jwks_file is not None and config.jwt_jwks_url:
        problems.append(("IMGW_JWT_JWKS_URL", "set it or IMGW_JWT_JWKS_FILE, not both"))
    if jwks:
        # An IdP signs tokens for many services: without both checks, a token minted for any
        # of them would open a session here.
        for field in ("jwt_issuer", "jwt_audience"):
            if not getattr(config, field):
                problems.append(
                    (env_name(field), "required when a JWKS is set (IMGW_JWT_JWKS_FILE or _URL)")
                )
    if config.jwt_jwks_min_refresh_s > config.jwt_jwks_refresh_s:
        problems.append(
            ("IMGW_JWT_JWKS_MIN_REFRESH_S", "must not be greater than IMGW_JWT_JWKS_REFRESH_S")
        )
    return problems


def load_or_exit(role: Role) -> Config:
    """Entry-point helper: the validated config, or the problems on stderr and exit 2."""
    try:
        return load(role)
    except ConfigError as error:
        _fail(role, error)


def _fail(role: str, error: ConfigError) -> NoReturn:
    print(f"{role}: invalid configuration:", file=sys.stderr)
    for var, message in error.problems:
        print(f"  {var}: {message}", file=sys.stderr)
    sys.exit(2)
