"""One WebSocket connection's life: admission (hello), opening the session (route, welcome and
the connect-time sync), the frame loop with its rate limit and error budget, and the close.
Also the sweep that closes idle sessions and sessions whose token expired.

websockets runs ``handler`` as the connection's only task; frames are handled inline, and each
kind of frame is handed to the module that owns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gateway.admission import Admission
from gateway.config import Config
from gateway.delivery import Deliveries
from gateway.group_frames import GroupFrames
from gateway.metrics import GatewayMetrics
from gateway.protocol import (
    CLIENT_OPS,
    PROTOCOL_VERSION,
    CloseCode,
    ErrorCode,
    Group,
    Hello,
    Ping,
    Presence,
    ProtocolError,
    Receipt,
    Send,
    Sync,
    encode,
    error_frame,
    parse_frame,
)
from gateway.receipts import Receipts
from gateway.routes import PresenceWatch, Routes
from gateway.send import Sender
from gateway.session import Outbox, Session, SessionTable, close_connection

log = logging.getLogger(__name__)

MAX_PROTOCOL_ERRORS = 20  # bad frames tolerated per session before closing with 4000
# Frames counted as im_gateway_frames_in_total{op="invalid"}: they could not be parsed.
_INVALID = (ErrorCode.BAD_JSON, ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_OP, ErrorCode.INVALID_TEXT)
# Refusals that count toward MAX_PROTOCOL_ERRORS (docs/protocol.md 7.2): frames a correct client
# never sends. Answers about state or backends (not_member, too_many, unavailable, ...) and
# rate_limited (its own budget) do not count.
_COUNTED = (*_INVALID, ErrorCode.ALREADY_AUTHENTICATED)


@dataclass(kw_only=True, slots=True, eq=False)
class Connections:
    config: Config
    metrics: GatewayMetrics
    admission: Admission
    table: SessionTable
    outbox: Outbox
    routes: Routes
    presence: PresenceWatch
    deliveries: Deliveries
    sender: Sender
    receipts: Receipts
    group_frames: GroupFrames
    _in: dict[str, Counter] = field(init=False)

    def __post_init__(self) -> None:
        # Label children resolved once: .labels() on the hot path costs a lock and a lookup.
        self._in = {op: self.metrics.frames_in.labels(op) for op in (*CLIENT_OPS, "invalid")}

    async def handler(self, ws: ServerConnection) -> None:
        table = self.table
        table.open_count += 1
        ip = self.admission.client_ip(ws, ws.request)
        table.ip_opened(ip)
        session: Session | None = None
        reason = "client_close"
        try:
            table.pending_hellos += 1
            try:
                opened = await self.admission.authenticate(ws)
            finally:
                table.pending_hellos -= 1
            if opened is None:
                return
            session, hello = opened
            if not await self._open(session, hello):
                session = None
                return
            reason = await self._serve(session)
        except ConnectionClosed:
            reason = closed_reason(ws)
        except Exception:
            log.exception("session failed")
            reason = "error"
            with contextlib.suppress(Exception):
                await close_connection(ws, CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            table.open_count -= 1
            table.ip_closed(ip)
            if session is not None:
                await self._close(session, session.close_reason or reason)

    async def _open(self, session: Session, hello: Hello) -> bool:
        """Register the session locally and in the route registry, then welcome and sync."""
        user = session.user
        limit = self.config.max_sessions_per_user
        others = [s for s in self.table.by_user.get(user, ()) if s.device != session.device]
        if len(others) >= limit:
            self.metrics.connects.labels("user_limit").inc()
            why = f"at most {limit} devices of one user per gateway"
            await close_connection(session.ws, CloseCode.TOO_MANY_SESSIONS, why)
            return False
        for old in [s for s in self.table.by_user.get(user, ()) if s.device == session.device]:
            old.close_reason = "replaced"
            self.outbox.close_soon(
                old, CloseCode.REPLACED, "replaced by a newer session of this device"
            )
        devices = self.table.add(session)
        self.metrics.connections_active.inc()
        try:
            try:
                await self.routes.register(user, first_here=len(devices) == 1)
            except Exception:  # one retry: a pool connect can time out under a connect burst
                await asyncio.sleep(0.05)
                await self.routes.register(user, first_here=len(devices) == 1)
        except Exception as exc:
            log.warning("route registration failed for %s: %r", user, exc)
            self._forget(session)
            self.metrics.connects.labels("backend_error").inc()
            self.metrics.disconnects.labels("backend_error").inc()
            with contextlib.suppress(Exception):
                await close_connection(session.ws, CloseCode.TRY_AGAIN_LATER, "backend unavailable")
            return False
        self.metrics.connects.labels("accepted").inc()
        welcome = {
            "op": "welcome",
            "protocol": PROTOCOL_VERSION,
            "user_id": user,
            "device_id": session.device,
            "node_id": self.config.node_id,
            "heartbeat_interval_s": self.config.heartbeat_interval_s,
            "idle_timeout_s": self.config.idle_timeout_s,
            "max_frame_bytes": self.config.max_frame_bytes,
            "rate_limit_per_s": self.config.rate_limit_per_s,
            "rate_limit_burst": self.config.rate_limit_burst,
            "send_queue_max": self.config.send_queue_max,
            "server_time": int(time.time() * 1000),
        }
        if hello.ref is not None:
            welcome["ref"] = hello.ref
        self.outbox.push(session, encode(welcome), "welcome")
        if hello.cursors is not None:
            await self.deliveries.sync(
                session, hello.cursors, hello.sync_limit, hello.ref, held=True
            )
        return True

    async def _serve(self, session: Session) -> str:
        max_bytes = self.config.max_frame_bytes
        async for raw in session.ws:
            now = time.monotonic()
            session.last_rx = now
            try:
                frame = parse_frame(raw, max_bytes)
                self._in[_op_of(frame)].inc()
                if not session.bucket.take(now):
                    self.metrics.rate_limited.inc()
                    session.violations += 1
                    if session.violations > self.config.rate_limit_burst:
                        session.close_reason = "rate_limited"
                        await close_connection(
                            session.ws, CloseCode.RATE_LIMITED, "rate limit exceeded"
                        )
                        return "rate_limited"
                    retry_ms = int(session.bucket.retry_after() * 1000) + 1
                    raise ProtocolError(
                        ErrorCode.RATE_LIMITED,
                        f"retry in {retry_ms} ms",
                        getattr(frame, "ref", None),
                    )
                session.violations = 0
                await self._dispatch(session, frame)
            except ConnectionClosed:
                raise
            except ProtocolError as exc:
                if exc.code in _INVALID:
                    self._in["invalid"].inc()
                self.metrics.protocol_errors.labels(exc.code).inc()
                self.outbox.push(session, error_frame(exc.code, exc.message, exc.ref), "error")
                if exc.code in _COUNTED:
                    session.errors += 1
                if session.errors > MAX_PROTOCOL_ERRORS:
                    session.close_reason = "protocol_error"
                    await close_connection(
                        session.ws, CloseCode.PROTOCOL_ERROR, "too many bad frames"
                    )
                    return "protocol_error"
            except Exception:  # a bug must cost one frame, not the session or the process
                log.exception("frame handling failed for %s", session.user)
                self.metrics.protocol_errors.labels(ErrorCode.INTERNAL).inc()
                failed = error_frame(ErrorCode.INTERNAL, "internal error")
                self.outbox.push(session, failed, "error")
        return closed_reason(session.ws)

    async def _dispatch(self, session: Session, frame: Any) -> None:
        if isinstance(frame, Send):
            await self.sender.on_send(session, frame)
        elif isinstance(frame, Ping):
            pong: dict[str, Any] = {"op": "pong", "server_time": int(time.time() * 1000)}
            if frame.ref is not None:
                pong["ref"] = frame.ref
            self.outbox.push(session, encode(pong), "pong")
        elif isinstance(frame, Receipt):
            await self.receipts.on_frame(session, frame)
        elif isinstance(frame, Sync):
            await self.deliveries.sync(session, frame.cursors, frame.limit, frame.ref, held=False)
        elif isinstance(frame, Presence):
            await self.presence.on_frame(session, frame)
        elif isinstance(frame, Group):
            await self.group_frames.on_frame(session, frame)
        elif isinstance(frame, Hello):
            raise ProtocolError(ErrorCode.ALREADY_AUTHENTICATED, "already authenticated", frame.ref)

    async def _close(self, session: Session, reason: str) -> None:
        self._forget(session)
        self.metrics.disconnects.labels(reason).inc()
        if self.table.by_user.get(session.user):
            return
        try:
            await asyncio.wait_for(self.routes.unregister(session.user), 2)
        except Exception as exc:  # the route expires by itself after route_ttl_s
            log.debug("route removal failed for %s: %r", session.user, exc)

    def _forget(self, session: Session) -> None:
        if not self.table.remove(session):
            return
        self.metrics.connections_active.dec()
        self.presence.forget(session)
        self.outbox.discard(session)

    async def sweep_loop(self, stop: asyncio.Event) -> None:
        """Idle timeouts, expired tokens and route refresh, for all sessions in one task."""
        last_refresh = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(1.0)
            now, wall = time.monotonic(), time.time()
            idle_limit = self.config.idle_timeout_s
            for session in list(self.table.sessions):
                if session.close_reason is not None:
                    continue
                if now - session.last_rx > idle_limit:
                    session.close_reason = "idle_timeout"
                    self.outbox.close_soon(session, CloseCode.IDLE_TIMEOUT, "idle timeout")
                elif wall > session.expires_at:
                    session.close_reason = "token_expired"
                    self.outbox.close_soon(session, CloseCode.TOKEN_EXPIRED, "token expired")
            if now - last_refresh >= self.config.route_ttl_s / 3:
                last_refresh = now
                try:
                    await self.routes.refresh()
                except Exception as exc:
                    log.warning("route refresh failed: %r", exc)


def closed_reason(ws: ServerConnection) -> str:
    """The disconnect reason of a connection the peer or the network closed."""
    received = ws.protocol.close_rcvd
    if received is not None and received.code == CloseCode.MESSAGE_TOO_BIG:
        return "frame_too_big"
    sent = ws.protocol.close_sent
    if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
        return "frame_too_big"
    if received is None and sent is None:
        return "connection_lost"
    return "client_close"


def _op_of(frame: Any) -> str:
    if isinstance(frame, Presence | Group):
        return frame.op
    return _OP_NAMES[type(frame)]


_OP_NAMES: dict[type, str] = {
    Hello: "hello",
    Ping: "ping",
    Send: "send",
    Receipt: "receipt",
    Sync: "sync",
}
