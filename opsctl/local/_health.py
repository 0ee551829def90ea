"""Health checks that speak each component's own protocol, with a hard timeout.

They are deliberately tiny protocol clients (no driver imports) so a check costs milliseconds:
Redis PING, a Kafka Metadata request, a CQL OPTIONS + STARTUP handshake, an HTTP GET.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


class HealthCheck(Protocol):
    def __call__(self, timeout_s: float) -> Health: ...

    def describe(self) -> str: ...


def _metadata_v4(host: str, port: int, correlation_id: int, body: bytes, timeout_s: float) -> bytes:
    """One Kafka Metadata v4 request (header v1: api_key 3, version 4, id, client id); the
    response payload after its size."""
    client_id = b"opsctl-local"
    header = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
    request = header + body
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        return _recv_exactly(sock, size)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        chunks += chunk
    return bytes(chunks)


@dataclass(frozen=True)
class SocketCheck:
    """A check of one TCP endpoint; ``probe`` names what it asks there."""

    probe: ClassVar[str]
    host: str
    port: int

    def describe(self) -> str:
        return f"{self.probe} {self.host}:{self.port}"


@dataclass(frozen=True)
class TcpCheck(SocketCheck):
    probe = "tcp"

    def __call__(self, timeout_s: float) -> Health:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout_s):
                return Health(True, "accepting connections")
        except OSError as exc:
            return Health(False, f"connect {self.host}:{self.port}: {exc}")


@dataclass(frozen=True)
class RedisLogin:
    """How a check reaches a TLS-only Redis with ACL users: the CA it trusts, the user and
    its password's file (read at each check, never shown)."""

    user: str
    password_file: Path
    ca_file: Path

    def connect(self, host: str, port: int, timeout_s: float) -> socket.socket:
        """A verified TLS connection, authenticated; raises OSError (ssl.SSLError is one)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        raw = socket.create_connection((host, port), timeout=timeout_s)
        try:
            sock = context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        password = self.password_file.read_text(encoding="utf-8").strip()
        sock.sendall(_resp("AUTH", self.user, password))
        reply = sock.recv(256)
        if not reply.startswith(b"+OK"):
            sock.close()
            # The reply names the problem (WRONGPASS, NOPERM), never the password.
            raise ConnectionError(f"AUTH as {self.user}: {reply[:80]!r}")
        return sock


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def redis_socket(host: str, port: int, login: RedisLogin | None, timeout_s: float) -> socket.socket:
    """A connection ready for commands: plain, or TLS and AUTH with ``login``."""
    if login is None:
        return socket.create_connection((host, port), timeout=timeout_s)
    return login.connect(host, port, timeout_s)


@dataclass(frozen=True)
class RedisPing(SocketCheck):
    probe = "redis PING"
    login: RedisLogin | None = None

    def __call__(self, timeout_s: float) -> Health:
        try:
            with redis_socket(self.host, self.port, self.login, timeout_s) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                reply = sock.recv(64)
        except OSError as exc:
            return Health(False, f"connect {self.host}:{self.port}: {exc}")
        if reply.startswith(b"+PONG"):
            return Health(True, "PONG")
        return Health(False, f"unexpected reply {reply[:40]!r}")


@dataclass(frozen=True)
class HttpCheck:
    host: str
    port: int
    path: str

    def describe(self) -> str:
        return f"GET http://{self.host}:{self.port}{self.path}"

    def __call__(self, timeout_s: float) -> Health:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        try:
            conn.request("GET", self.path)
            response = conn.getresponse()
            response.read(4096)
        except (OSError, http.client.HTTPException) as exc:
            return Health(False, f"GET {self.path}: {exc}")
        finally:
            conn.close()
        if response.status == 200:
            return Health(True, f"GET {self.path} 200")
        return Health(False, f"GET {self.path} returned {response.status}")


@dataclass(frozen=True)
class KafkaMetadataCheck(SocketCheck):
    """A Metadata v4 request (still supported by Kafka 3.x and 4.x): healthy when the broker
    lists itself and a controller is elected."""

    probe = "kafka metadata"

    def __call__(self, timeout_s: float) -> Health:
        body = struct.pack(">i?", -1, False)  # topics=null (all), allow_auto_topic_creation
        try:
            payload = _metadata_v4(self.host, self.port, 1, body, timeout_s)
        except (OSError, struct.error) as exc:
            return Health(False, f"metadata request to {self.host}:{self.port}: {exc}")
        try:
            brokers, controller = _parse_metadata_v4(payload)
        except (struct.error, IndexError, UnicodeDecodeError) as exc:
            return Health(False, f"unreadable metadata response: {exc}")
        if not brokers:
            return Health(False, "no brokers registered yet")
        if controller < 0:
            return Health(False, "no active controller yet")
        listed = ", ".join(f"{host}:{port}" for host, port in brokers)
        return Health(True, f"brokers {listed}, controller {controller}")


@dataclass(frozen=True)
class KafkaTopicsCheck(SocketCheck):
    """Metadata v4 for named topics: healthy when every one exists with its partitions led
    (MirrorMaker 2 is healthy once the topics it mirrors exist in the target cluster)."""

    probe = "kafka topics"
    topics: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"kafka topics {', '.join(self.topics)} on {self.host}:{self.port}"

    def __call__(self, timeout_s: float) -> Health:
        body = struct.pack(">i", len(self.topics))
        for topic in self.topics:
            raw = topic.encode()
            body += struct.pack(">h", len(raw)) + raw
        body += struct.pack(">?", False)  # no auto-creation
        try:
            payload = _metadata_v4(self.host, self.port, 2, body, timeout_s)
        except (OSError, struct.error) as exc:
            return Health(False, f"metadata request to {self.host}:{self.port}: {exc}")
        try:
            found = _parse_metadata_v4_topics(payload)
        except (struct.error, IndexError, UnicodeDecodeError) as exc:
            return Health(False, f"unreadable metadata response: {exc}")
        missing = [t for t in self.topics if found.get(t, (-1, 0))[0] != 0 or not found[t][1]]
        if missing:
            return Health(False, f"no topic {', '.join(missing)} on {self.host}:{self.port} yet")
        return Health(True, f"{', '.join(self.topics)} on {self.host}:{self.port}")


@dataclass(frozen=True)
class AllOf:
    """Healthy when every check is (the first failing one's detail otherwise)."""

    checks: tuple[HealthCheck, ...]

    def describe(self) -> str:
        return "; ".join(check.describe() for check in self.checks)

    def __call__(self, timeout_s: float) -> Health:
        details = []
        for check in self.checks:
            health = check(timeout_s)
            if not health.ok:
                return health
            details.append(health.detail)
        return Health(True, "; ".join(details))


def _skip_metadata_brokers(payload: bytes) -> int:
    """The offset after a Metadata v4 response's brokers, cluster id and controller id."""
    pos = 4 + 4
    (count,) = struct.unpack_from(">i", payload, pos)
    pos += 4
    for _ in range(max(count, 0)):
        (host_len,) = struct.unpack_from(">h", payload, pos + 4)
        pos += 6 + host_len
        (rack_len,) = struct.unpack_from(">h", payload, pos + 4)
        pos += 6 + max(rack_len, 0)
    (cluster_len,) = struct.unpack_from(">h", payload, pos)
    end: int = pos + 2 + max(cluster_len, 0) + 4
    return end


def _parse_metadata_v4_topics(payload: bytes) -> dict[str, tuple[int, int]]:
    """Topic -> (error code, partition count) from a Metadata v4 response."""
    pos = _skip_metadata_brokers(payload)
    (count,) = struct.unpack_from(">i", payload, pos)
    pos += 4
    topics: dict[str, tuple[int, int]] = {}
    for _ in range(max(count, 0)):
        error, name_len = struct.unpack_from(">hh", payload, pos)
        pos += 4
        name = payload[pos : pos + name_len].decode()
        pos += name_len + 1  # is_internal
        (partitions,) = struct.unpack_from(">i", payload, pos)
        pos += 4
        for _ in range(max(partitions, 0)):
            pos += 2 + 4 + 4  # error code, partition index, leader
            for _array in range(2):  # replicas, isr
                (size,) = struct.unpack_from(">i", payload, pos)
                pos += 4 + 4 * max(size, 0)
        topics[name] = (error, max(partitions, 0))
    return topics


def _parse_metadata_v4(payload: bytes) -> tuple[list[tuple[str, int]], int]:
    pos = 4 + 4  # correlation_id, throttle_time_ms
    (count,) = struct.unpack_from(">i", payload, pos)
    pos += 4
    brokers = []
    for _ in range(max(count, 0)):
        _node_id, host_len = struct.unpack_from(">ih", payload, pos)
        pos += 6
        host = payload[pos : pos + host_len].decode()
        pos += host_len
        (port, rack_len) = struct.unpack_from(">ih", payload, pos)
        pos += 6 + max(rack_len, 0)
        brokers.append((host, port))
    (cluster_len,) = struct.unpack_from(">h", payload, pos)
    pos += 2 + max(cluster_len, 0)
    (controller,) = struct.unpack_from(">i", payload, pos)
    return brokers, controller


@dataclass(frozen=True)
class CqlCheck(SocketCheck):
    """CQL native protocol v4: OPTIONS must answer SUPPORTED and STARTUP must answer READY,
    or AUTHENTICATE when the node checks passwords. With ``ca_file`` over verified TLS (no
    login: the roles may not exist yet while the node starts)."""

    probe = "cql"
    ca_file: Path | None = None

    def __call__(self, timeout_s: float) -> Health:
        startup_body = _cql_string_map({"CQL_VERSION": "3.0.0"})
        try:
            with self._connect(timeout_s) as sock:
                opcode, _ = _cql_exchange(sock, 0x05, b"", stream=1)  # OPTIONS
                if opcode != 0x06:  # SUPPORTED
                    return Health(False, f"OPTIONS answered opcode {opcode:#x}")
                opcode, body = _cql_exchange(sock, 0x01, startup_body, stream=2)  # STARTUP
        except (OSError, struct.error, ConnectionError) as exc:
            return Health(False, f"cql handshake with {self.host}:{self.port}: {exc}")
        if opcode == 0x02:  # READY
            return Health(True, "CQL READY")
        if opcode == 0x03:  # AUTHENTICATE
            return Health(True, "CQL READY, password authentication")
        return Health(False, f"STARTUP answered opcode {opcode:#x}: {body[:80]!r}")

    def _connect(self, timeout_s: float) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout=timeout_s)
        if self.ca_file is None:
            return raw
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            return context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def _cql_string_map(values: dict[str, str]) -> bytes:
    out = struct.pack(">H", len(values))
    for key, value in values.items():
        for text in (key, value):
            raw = text.encode()
            out += struct.pack(">H", len(raw)) + raw
    return out


def _cql_exchange(sock: socket.socket, opcode: int, body: bytes, stream: int) -> tuple[int, bytes]:
    sock.sendall(struct.pack(">BBhBi", 0x04, 0, stream, opcode, len(body)) + body)
    _version, _flags, _stream, reply_opcode, length = struct.unpack(
        ">BBhBi", _recv_exactly(sock, 9)
    )
    return reply_opcode, _recv_exactly(sock, length)
