"""A minimal WebSocket client for the IM gateway, cheap enough for tens of thousands of
sessions per Locust worker.

Under Locust (gevent) every wait yields to the hub. One connection per simulated user; the
user's own greenlet reads it (no reader greenlet per connection), which keeps an idle session
to an OS socket, one watcher, one timer and a few small objects.

What a frame costs is what a worker's sessions and message rates cost (opsctl/loadtest/sizing.py),
so the plain ``ws://`` path skips gevent's per-call machinery (benchmarks/loadtest_generator.py):

- the connection is a non-blocking OS socket, not a gevent socket object (its wrapper, second
  watcher and per-call Python layers); reads and writes try the OS socket first, and only
  when it would block does the greenlet wait in the hub on one read watcher and a bare loop
  timer, instead of a ``gevent.Timeout`` (an exception object and a context manager) per wait;
- one ``recv`` takes whatever arrived and every complete frame in it is decoded straight from
  that chunk, without a copy into a buffer first;
- JSON is encoded compactly with one encoder built once, and decoded with the C scanner;
- a numeric gateway address is not resolved through gevent's resolver thread pool, a name at
  most once per RESOLVE_TTL_S;
- per connection: ``__slots__``, the parsed URL shared between connections to the same URL,
  the token dropped once the upgrade request is sent.

``wss://`` goes through gevent's SSL socket object with its own timeouts.
"""

from __future__ import annotations

import _socket
import base64
import contextlib
import errno
import json
import os
import random
import socket
import ssl
import struct
import time
from collections.abc import Callable
from functools import lru_cache
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any
from urllib.parse import urlsplit

from gevent import get_hub, getcurrent

_OP_TEXT = 0x1
_OP_CLOSE = 0x8
_OP_PING = 0x9
_OP_PONG = 0xA
_READ_CHUNK = 16384
_EMPTY = b""
_READABLE = 1  # libev's EV_READ and EV_WRITE
_WRITABLE = 2
RESOLVE_TTL_S = 10.0
_RESOLVED: dict[tuple[str, int], tuple[float, list[tuple[int, Any]]]] = {}


def _compact_encoder() -> Callable[[Any], str]:
    """Compact JSON; the C encoder is built once, not once per frame as ``json.dumps`` does."""
    encoder = json.JSONEncoder(separators=(",", ":"), check_circular=False)
    if c_make_encoder is None:
        return encoder.encode
    make = c_make_encoder(
        None, encoder.default, encode_basestring_ascii, None, ":", ",", False, False, True
    )
    return lambda obj: "".join(make(obj, 0))


_encode = _compact_encoder()
_scan = json.JSONDecoder().scan_once  # the C scanner: no whitespace or encoding checks
_getrandbits = random.getrandbits
_from_bytes = int.from_bytes


def _decode(text: str) -> Any:
    try:
        return _scan(text, 0)[0]
    except StopIteration:  # not JSON: let json say exactly why
        return json.loads(text)


def _try_recv(raw: Any) -> bytes | None:
    """What the OS socket holds, None if nothing yet. Its own frame: the exception's traceback
    would otherwise keep the caller's frame object alive while an idle session waits."""
    try:
        return raw.recv(_READ_CHUNK)  # type: ignore[no-any-return]
    except BlockingIOError:
        return None


class ConnectError(Exception):
    """The connection or the upgrade failed (refused, 503 draining/server_full, timeout)."""


class Closed(Exception):
    """The gateway closed the connection."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed ({code}) {reason}".strip())
        self.code = code


def _mask(payload: bytes, key: int) -> bytes:
    # XOR the whole payload at once as one big integer: far faster than a Python byte loop.
    length = len(payload)
    if not length:
        return payload
    repeated = key.to_bytes(4, "little") * (length // 4 + 1)
    value = _from_bytes(payload, "little") ^ _from_bytes(repeated[:length], "little")
    return value.to_bytes(length, "little")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    # Masking only stops proxy cache poisoning; a PRNG key avoids a syscall per frame.
    key = _getrandbits(32)
    return header + key.to_bytes(4, "little") + _mask(payload, key)


@lru_cache(maxsize=64)
def _target(url: str) -> tuple[bool, str, int, str]:
    """(tls, host, port, path) of a gateway URL; every connection to it shares the strings."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ConnectError(f"{url}: the URL must start with ws:// or wss://")
    tls = parts.scheme == "wss"
    return tls, parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80), parts.path or "/"


def _addresses(host: str, port: int) -> list[tuple[int, Any]]:
    """(family, address) to try for a gateway. A numeric host is parsed in-process; a name is
    looked up through gevent's resolver (a thread pool) at most once per RESOLVE_TTL_S, not
    once per connect: tens of thousands of sessions would otherwise queue on the pool and
    flood the cluster's DNS with identical questions."""
    now = time.monotonic()
    cached = _RESOLVED.get((host, port))
    if cached is not None and cached[0] > now:
        return cached[1]
    try:
        infos = _socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    addresses = [(family, address) for family, _, _, _, address in infos]
    _RESOLVED[(host, port)] = (now + RESOLVE_TTL_S, addresses)
    return addresses


def _open(host: str, port: int, timeout_s: float) -> socket.socket:
    """A connected socket object (gevent's under Locust), for TLS: the first address that
    answers, Nagle off (frames are small and each is one write)."""
    error: OSError = ConnectError("no address")
    for family, address in _addresses(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """Built once: loading the CA bundle per connect costs more than the handshake."""
    return ssl.create_default_context()


class ImConnection:
    """One WebSocket connection. Plain ``ws://`` goes through the non-blocking OS socket
    (``_raw``) and waits in the hub on one read watcher; ``wss://`` through an SSL socket object
    (``sock``) and its own timeouts."""

    __slots__ = (
        "_buffer",
        "_raw",
        "_watcher",
        "host",
        "path",
        "port",
        "sock",
        "timeout_s",
        "tls",
        "token",
        "url",
    )

    def __init__(self, url: str, *, token: str, timeout_s: float = 5.0) -> None:
        self.tls, self.host, self.port, self.path = _target(url)
        self.url = url
        self.token = token
        self.timeout_s = timeout_s
        self.sock: Any = None
        self._raw: Any = None
        self._watcher: Any = None  # the hub's read watcher on _raw, made at the first wait
        self._buffer: bytes = _EMPTY  # the start of a frame whose rest has not arrived

    @property
    def connected(self) -> bool:
        return self._raw is not None or self.sock is not None

    # ---- connecting --------------------------------------------------------------------

    def connect(self) -> None:
        try:
            if self.tls:
                sock = _open(self.host, self.port, self.timeout_s)
                self.sock = _tls_context().wrap_socket(sock, server_hostname=self.host)
            else:
                self._raw = self._open_raw(time.monotonic() + self.timeout_s)
        except OSError as exc:
            self.close()
            raise ConnectError(f"{self.host}:{self.port}: {exc}") from exc
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {self.token}\r\n\r\n"
        )
        self.token = ""  # a session signs a fresh one per connect; no need to hold it
        try:
            self._write(request.encode())
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = self._read(self.timeout_s)  # as long again for each part of the answer
                if not chunk:
                    raise ConnectError("connection closed during the upgrade")
                response += chunk
                if len(response) > 65536:
                    raise ConnectError("upgrade response too large")
        except (OSError, ConnectError) as exc:
            self.close()
            if isinstance(exc, ConnectError):
                raise
            raise ConnectError(f"upgrade failed: {str(exc) or 'timed out'}") from exc
        head, _, rest = response.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status_line + " ":
            self.close()
            raise ConnectError(
                f"upgrade refused: {status_line} {rest[:64].decode(errors='replace')}"
            )
        self._buffer = rest

    def _open_raw(self, deadline: float) -> Any:
        """A connected non-blocking OS socket: the first address that answers in time."""
        error: OSError = ConnectError("no address")
        for family, address in _addresses(self.host, self.port):
            raw = _socket.socket(family, socket.SOCK_STREAM)
            raw.setblocking(False)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = raw.connect_ex(address)
            if code == errno.EINPROGRESS:
                self._wait(raw, _WRITABLE, deadline - time.monotonic())
                code = raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    try:
                        raw.getpeername()  # still connecting when the wait timed out
                    except OSError:
                        code = errno.ETIMEDOUT
            if code == 0:
                return raw
            raw.close()
            error = OSError(code, os.strerror(code))
        raise error

    # ---- frames out --------------------------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        self.send_text(_encode(frame))

    def send_text(self, text: str) -> None:
        """Send an already encoded JSON frame."""
        try:
            self._write(encode_frame(_OP_TEXT, text.encode()))
        except OSError as exc:
            self.close()
            raise Closed(None, str(exc) or "send timed out") from exc

    def _write(self, data: bytes) -> None:
        raw = self._raw
        if raw is None:
            if self.sock is None:
                raise Closed(None, "not connected")
            self.sock.sendall(data)
            return
        try:
            sent = raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):  # the kernel's buffer is full: wait for room
            self._write_rest(raw, data, sent)

    def _write_rest(self, raw: Any, data: bytes, sent: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        while sent < len(data):
            data = data[sent:]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("send timed out")
            self._wait(raw, _WRITABLE, left)
            try:
                sent = raw.send(data)
            except BlockingIOError:
                sent = 0

    # ---- frames in ---------------------------------------------------------------------

    def receive(self, timeout_s: float) -> list[dict[str, Any]]:
        """Frames that arrived within ``timeout_s`` (possibly none); raises Closed."""
        if self._buffer:
            frames = self._parse(_EMPTY)
            if frames:
                return frames
        try:
            chunk = self._read(timeout_s)
        except TimeoutError:
            return []
        except OSError as exc:
            self.close()
            raise Closed(None, str(exc)) from exc
        if not chunk:
            self.close()
            raise Closed(1006, "connection lost")
        return self._parse(chunk)

    def _read(self, timeout_s: float) -> bytes:
        """What arrived within ``timeout_s``; b"" at the end of the stream; TimeoutError."""
        raw = self._raw
        if raw is None:
            if self.sock is None:
                raise Closed(None, "not connected")
            self.sock.settimeout(max(timeout_s, 0.0001))
            return self.sock.recv(_READ_CHUNK)  # type: ignore[no-any-return]
        chunk = _try_recv(raw)
        if chunk is not None:
            return chunk
        self._wait(raw, _READABLE, timeout_s)
        if self._raw is not raw:  # closed by another greenlet while we waited: we let go
            raw.close()
            return _EMPTY
        chunk = _try_recv(raw)
        if chunk is None:
            raise TimeoutError
        return chunk

    def _wait(self, raw: Any, events: int, timeout_s: float) -> None:
        """Sleep in the hub until ``raw`` is ready for ``events`` or ``timeout_s`` passes (the
        caller tries again to tell which). A watcher and a bare loop timer switch straight back
        to this greenlet: no Timeout, Waiter or callback arguments kept per waiting session.
        Both are stopped before anything else runs here, so neither can switch in later."""
        hub = get_hub()
        if events == _READABLE:
            watcher = self._watcher
            if watcher is None:
                watcher = self._watcher = hub.loop.io(raw.fileno(), _READABLE)
        else:
            watcher = hub.loop.io(raw.fileno(), _WRITABLE)
        timer = hub.loop.timer(max(timeout_s, 0.0001))
        switch = getcurrent().switch
        watcher.start(switch)
        timer.start(switch)
        try:
            hub.switch()
        finally:
            watcher.stop()
            timer.stop()
            timer.close()
            if events != _READABLE:
                watcher.close()

    def _parse(self, chunk: bytes) -> list[dict[str, Any]]:
        """Every complete frame in what is buffered plus ``chunk``; keeps the remainder."""
        buf = self._buffer + chunk if self._buffer else chunk
        frames: list[dict[str, Any]] = []
        end = len(buf)
        pos = 0
        while end - pos >= 2:
            opcode = buf[pos] & 0x0F
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                start = pos + 10
            stop = start + length
            if stop > end:
                break
            pos = stop
            if opcode == _OP_TEXT:
                frames.append(_decode(buf[start:stop].decode()))
            elif opcode == _OP_PING and self.connected:
                self._write(encode_frame(_OP_PONG, buf[start:stop]))
            elif opcode == _OP_CLOSE:
                payload = buf[start:stop]
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.close()
                if frames:  # hand over what came before the close first
                    self._buffer = encode_frame_server_close(code)
                    return frames
                self._buffer = _EMPTY
                raise Closed(code, payload[2:].decode(errors="replace"))
        self._buffer = buf[pos:] if pos < end else _EMPTY
        return frames

    # ---- ending ------------------------------------------------------------------------

    def sever(self) -> None:
        """Shut the socket down both ways without closing it: a reader sees the stream end."""
        target = self._raw if self._raw is not None else self.sock
        if target is not None:
            try:
                target.shutdown(socket.SHUT_RDWR)
            except OSError:
                self.close()

    def close(self) -> None:
        raw, sock, watcher = self._raw, self.sock, self._watcher
        self._raw = self.sock = self._watcher = None
        if raw is not None:
            if watcher is not None and watcher.active:
                # Another greenlet is waiting on this socket: end the stream under it; it
                # wakes, stops its watcher and closes the socket (libev must never watch a
                # closed descriptor).
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_RDWR)
            else:
                if watcher is not None:
                    watcher.close()
                raw.close()
        if sock is not None:
            sock.close()


def encode_frame_server_close(code: int | None) -> bytes:
    """An unmasked close frame, to replay a close after frames that preceded it."""
    payload = struct.pack("!H", code) if code is not None else b""
    return bytes([0x80 | _OP_CLOSE, len(payload)]) + payload
