"""Who gets in: the plain-HTTP routes and the upgrade refusals (draining, not ready, full, too
many sockets without a hello yet, too many from one client IP) in front of /ws, then the hello
frame and its token, which make a connection a ``Session``.

Refusals happen before the WebSocket handshake completes wherever possible (HTTP 503, or 429
for the per-IP limit), so a gateway that cannot serve costs clients one request, not a session.
The limits are checked at the upgrade and counted from the handler's start, so a burst of
upgrades can overshoot one by the upgrades in flight at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import Counter
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gateway.auth import AuthError, TokenVerifier
from gateway.backends import Backends
from gateway.config import Config
from gateway.drain import Drain
from gateway.limits import TokenBucket
from gateway.metrics import GatewayMetrics
from gateway.protocol import CloseCode, ErrorCode, Hello, ProtocolError, error_frame, parse_frame
from gateway.runtime import http_route, request_path
from gateway.session import Outbox, Session, SessionTable, close_connection

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(kw_only=True, slots=True, eq=False)
class Admission:
    config: Config
    verifier: TokenVerifier
    metrics: GatewayMetrics
    backends: Backends
    table: SessionTable
    outbox: Outbox
    drain: Drain
    _invalid: Counter = field(init=False)
    _hello: Counter = field(init=False)

    def __post_init__(self) -> None:
        self._invalid = self.metrics.frames_in.labels("invalid")
        self._hello = self.metrics.frames_in.labels("hello")
        self.metrics.connections_limit.set(self.config.max_connections)

    # HTTP -----------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if self.drain.active:
            return False, "draining"
        return self.backends.readiness()

    def _render(self) -> bytes:
        self.metrics.ready.set(1 if self.readiness()[0] else 0)
        self.metrics.send_queue_depth.set(self.outbox.queued)
        self.metrics.send_queue_bytes.set(self.outbox.queued_bytes)
        return self.metrics.render()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request_path(request)
        response = http_route(connection, path, ready=self.readiness, render_metrics=self._render)
        if response is not None:
            return response
        if path != "/ws":
            return connection.respond(404, "not found; the WebSocket endpoint is /ws\n")
        refusal = None
        ip_limit = self.config.max_connections_per_ip
        if self.drain.active:
            refusal = "draining"
        elif not self.readiness()[0]:
            refusal = "not_ready"
        elif self.table.open_count >= self.config.max_connections:
            refusal = "server_full"
        elif self.table.pending_hellos >= self.config.max_pending_hellos:
            refusal = "preauth_limit"
        elif ip_limit and self.table.by_ip[self.client_ip(connection, request)] >= ip_limit:
            refusal = "ip_limit"
        if refusal is None:
            return None
        self.metrics.connects.labels(refusal).inc()
        status = 429 if refusal == "ip_limit" else 503
        response = connection.respond(status, refusal + "\n")
        response.headers["Retry-After"] = "1"
        return response

    def client_ip(self, connection: ServerConnection, request: Request | None) -> str:
        peer = connection.remote_address[0] if connection.remote_address else "?"
        forwarded = request.headers.get("X-Forwarded-For") if request is not None else None
        return client_ip(peer, forwarded, self.config.trusted_proxies)

    # Hello ----------------------------------------------------------------------------------

    async def authenticate(self, ws: ServerConnection) -> tuple[Session, Hello] | None:
        """Read hello and verify its token; None when the connection was refused (and closed)."""
        try:
            raw = await asyncio.wait_for(ws.recv(), self.config.hello_timeout_s)
        except TimeoutError:
            self.metrics.connects.labels("hello_timeout").inc()
            await close_connection(ws, CloseCode.HELLO_TIMEOUT, "no hello frame in time")
            return None
        except ConnectionClosed:
            self.metrics.connects.labels("closed_before_hello").inc()
            return None
        try:
            frame = parse_frame(raw, self.config.max_frame_bytes)
            if not isinstance(frame, Hello):
                raise ProtocolError(ErrorCode.NOT_AUTHENTICATED, "the first frame must be hello")
        except ProtocolError as exc:
            self._invalid.inc()
            self.metrics.protocol_errors.labels(exc.code).inc()
            self.metrics.connects.labels("protocol_error").inc()
            await self._send_then_close(
                ws, error_frame(exc.code, exc.message, exc.ref), CloseCode.PROTOCOL_ERROR, exc.code
            )
            return None
        self._hello.inc()
        token = frame.token or bearer(
            ws.request.headers.get("Authorization") if ws.request else None
        )
        try:
            identity = await self.verifier.verify_async(token)
        except AuthError as exc:
            self.metrics.auth_failures.labels(exc.reason).inc()
            self.metrics.connects.labels("auth_failed").inc()
            code = CloseCode.TOKEN_EXPIRED if exc.expired else CloseCode.UNAUTHORIZED
            error = ErrorCode.TOKEN_EXPIRED if exc.expired else ErrorCode.UNAUTHORIZED
            self.metrics.protocol_errors.labels(error).inc()  # every error frame, by code
            await self._send_then_close(
                ws, error_frame(error, exc.reason, frame.ref), code, exc.reason
            )
            return None
        now = time.monotonic()
        bucket = TokenBucket(self.config.rate_limit_per_s, self.config.rate_limit_burst, now)
        session = Session(
            ws,
            identity.user_id,
            frame.device_id,
            expires_at=identity.expires_at,
            bucket=bucket,
            last_rx=now,
        )
        if frame.cursors is not None:
            session.syncing = 1  # hold live deliveries until the connect-time sync is done
        return session, frame

    async def _send_then_close(self, ws: ServerConnection, frame: str, code: int, why: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(frame)
            self.outbox.sent["error"].inc()
            await close_connection(ws, code, why[:100])


def client_ip(peer: str, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> str:
    """The client's IP for the per-IP limit: the peer's, unless the peer is a trusted proxy;
    then the last X-Forwarded-For address that is not one (each proxy appends the address it
    got the request from, so what comes before that is the client's to forge)."""
    if not trusted or not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def bearer(header: str | None) -> str | None:
    """The token of an 'Authorization: Bearer <token>' header."""
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None
