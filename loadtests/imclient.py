"""A minimal WebSocket client for the IM gateway, cheap enough for tens of thousands of
sessions per Locust worker.

It uses only the ``socket`` module, so under Locust (which gevent-patches sockets) every call
yields to the hub instead of blocking. It reads with one large ``recv`` and parses as many
frames as arrived, instead of one small read per header field, and does no per-frame UTF-8
validation beyond ``json.loads``. One connection per simulated user; the user's own greenlet
reads it (no reader greenlet per connection), which keeps an idle session to a socket, a
buffer and a few small objects.
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import ssl
import struct
from typing import Any
from urllib.parse import urlsplit

_OP_TEXT = 0x1
_OP_CLOSE = 0x8
_OP_PING = 0x9
_OP_PONG = 0xA
_READ_CHUNK = 65536


class ConnectError(Exception):
    """The connection or the upgrade failed (refused, 503 draining/server_full, timeout)."""


class Closed(Exception):
    """The gateway closed the connection."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed ({code}) {reason}".strip())
        self.code = code


def _mask(payload: bytes, key: bytes) -> bytes:
    # XOR the whole payload at once as one big integer: far faster than a Python byte loop.
    length = len(payload)
    if not length:
        return payload
    repeated = (key * (length // 4 + 1))[:length]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")
    return value.to_bytes(length, "little")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    # Masking only stops proxy cache poisoning; a PRNG key avoids a syscall per frame.
    key = random.getrandbits(32).to_bytes(4, "little")
    return header + key + _mask(payload, key)


class ImConnection:
    def __init__(self, url: str, *, token: str, timeout_s: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise ConnectError(f"{url}: the URL must start with ws:// or wss://")
        self.tls = parts.scheme == "wss"
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.path = parts.path or "/"
        self.token = token
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None
        self._buffer = bytearray()

    def connect(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            if self.tls:
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=self.host)
        except OSError as exc:
            raise ConnectError(f"{self.host}:{self.port}: {exc}") from exc
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {self.token}\r\n\r\n"
        )
        try:
            sock.sendall(request.encode())
            response = bytearray()
            while b"\r\n\r\n" not in response:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectError("connection closed during the upgrade")
                response += chunk
                if len(response) > 65536:
                    raise ConnectError("upgrade response too large")
        except OSError as exc:
            sock.close()
            raise ConnectError(f"upgrade failed: {exc}") from exc
        head, _, rest = bytes(response).partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status_line + " ":
            sock.close()
            raise ConnectError(
                f"upgrade refused: {status_line} {rest[:64].decode(errors='replace')}"
            )
        self.sock = sock
        self._buffer = bytearray(rest)

    def send(self, frame: dict[str, Any]) -> None:
        if self.sock is None:
            raise Closed(None, "not connected")
        try:
            self.sock.sendall(encode_frame(_OP_TEXT, json.dumps(frame).encode()))
        except OSError as exc:
            self.close()
            raise Closed(None, str(exc)) from exc

    def receive(self, timeout_s: float) -> list[dict[str, Any]]:
        """Frames that arrived within ``timeout_s`` (possibly none); raises Closed."""
        if self._buffer:
            frames = self._parse()
            if frames:
                return frames
        if self.sock is None:
            raise Closed(None, "not connected")
        self.sock.settimeout(max(timeout_s, 0.0001))
        try:
            chunk = self.sock.recv(_READ_CHUNK)
        except TimeoutError:
            return []
        except OSError as exc:
            self.close()
            raise Closed(None, str(exc)) from exc
        if not chunk:
            self.close()
            raise Closed(1006, "connection lost")
        self._buffer += chunk
        return self._parse()

    def _parse(self) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        buf = self._buffer
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            length = buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    break
                length = struct.unpack_from("!H", buf, 2)[0]
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length = struct.unpack_from("!Q", buf, 2)[0]
                offset = 10
            if len(buf) < offset + length:
                break
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            if opcode == _OP_TEXT:
                frames.append(json.loads(payload))
            elif opcode == _OP_PING and self.sock is not None:
                self.sock.sendall(encode_frame(_OP_PONG, payload))
            elif opcode == _OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.close()
                if frames:  # hand over what came before the close first
                    self._buffer = bytearray(encode_frame_server_close(code))
                    return frames
                raise Closed(code, payload[2:].decode(errors="replace"))
        return frames

    def sever(self) -> None:
        """Shut the socket down both ways without closing it: a reader sees the stream end."""
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                self.close()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


def encode_frame_server_close(code: int | None) -> bytes:
    """An unmasked close frame, to replay a close after frames that preceded it."""
    payload = struct.pack("!H", code) if code is not None else b""
    return bytes([0x80 | _OP_CLOSE, len(payload)]) + payload
