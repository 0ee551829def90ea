"""Who gets in: the plain-HTTP routes and the upgrade refusals (draining, not ready, full) in
front of /ws, then the hello frame and its token, which make a connection a ``Session``.

Refusals happen before the WebSocket handshake completes wherever possible (HTTP 503), so a
gateway that cannot serve costs clients one request, not a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
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
        if self.drain.active:
            refusal = "draining"
        elif not self.readiness()[0]:
            refusal = "not_ready"
        elif self.table.open_count >= self.config.max_connections:
            refusal = "server_full"
        if refusal is None:
            return None
        self.metrics.connects.labels(refusal).inc()
        response = connection.respond(503, refusal + "\n")
        response.headers["Retry-After"] = "1"
        return response

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


def bearer(header: str | None) -> str | None:
    """The token of an 'Authorization: Bearer <token>' header."""
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None
