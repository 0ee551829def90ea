"""A session (one authenticated device), the table of this node's sessions, and the outbox that
writes frames to them.

Per-connection cost is kept small on purpose (>= 30k idle sessions per GB): one ``Session``
with __slots__, no task of our own per connection (websockets runs the handler), frames written
straight to the transport while its buffer has room, and a bounded queue plus a short-lived
flusher task only when a client reads slowly.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from gateway.config import Config
from gateway.limits import TokenBucket
from gateway.metrics import GatewayMetrics
from gateway.protocol import CloseCode, encode
from gateway.runtime import Tasks

if TYPE_CHECKING:
    from gateway.state import DeliveryItem

WRITE_LIMIT = 64 * 1024  # socket write buffer above which frames are queued instead

# Every server frame op, for the frames_out counter.
SERVER_OPS = (
    "welcome",
    "pong",
    "ack",
    "message",
    "gap",  # an in-doubt seq range, delivered live like a message (gateway.delivery)
    "receipt",
    "sync_batch",
    "sync_done",
    "sync_required",
    "presence",
    "group",
    "ok",
    "error",
    "reconnect",
)


@dataclass(slots=True, eq=False)
class Session:
    """One authenticated WebSocket session (one device)."""

    ws: ServerConnection
    user: str
    device: str
    _: KW_ONLY
    expires_at: float
    bucket: TokenBucket
    last_rx: float  # monotonic time of the last frame received
    errors: int = 0
    violations: int = 0
    close_reason: str | None = None
    marks: dict[str, int] | None = None  # conversation -> highest seq sent
    outbox: deque[str] | None = None  # only while the socket is backed up
    subs: set[str] | None = None  # presence subscriptions
    syncing: int = 0  # > 0: live deliveries are held until the sync is done
    held: list[DeliveryItem] | None = None
    resync: bool = False


class SessionTable:
    """This node's open sessions, by user. ``open_count`` also counts connections that have
    not said hello yet (for the connection limit)."""

    def __init__(self) -> None:
        self.sessions: set[Session] = set()
        self.by_user: dict[str, list[Session]] = {}
        self.open_count = 0

    def add(self, session: Session) -> list[Session]:
        """Register the session; returns its user's sessions here, older ones first."""
        devices = self.by_user.setdefault(session.user, [])
        devices.append(session)
        self.sessions.add(session)
        return devices

    def remove(self, session: Session) -> bool:
        """Unregister the session; False if it was not registered (any more)."""
        if session not in self.sessions:
            return False
        self.sessions.discard(session)
        devices = self.by_user.get(session.user)
        if devices is not None:
            with contextlib.suppress(ValueError):
                devices.remove(session)
            if not devices:
                del self.by_user[session.user]
        return True


class Outbox:
    """Writes frames to sessions without blocking the caller, and counts them by op."""

    def __init__(self, config: Config, metrics: GatewayMetrics, tasks: Tasks) -> None:
        self._queue_max = config.send_queue_max
        self._drops = metrics.send_queue_drops
        self._tasks = tasks
        # Label children resolved once: .labels() on the hot path costs a lock and a lookup.
        self.sent = {op: metrics.frames_out.labels(op) for op in SERVER_OPS}
        self.queued = 0  # frames waiting in the queues of all sessions

    def push(self, session: Session, frame: str, op: str) -> bool:
        """Queue one frame for a session without blocking; False if it was dropped."""
        ws = session.ws
        if ws.protocol.state is not State.OPEN or session.close_reason is not None:
            return False
        if session.outbox is None and ws.transport.get_write_buffer_size() < WRITE_LIMIT:
            # Fast path, no task: what ws.send() does minus waiting for the buffer to drain.
            ws.protocol.send_text(frame.encode())
            ws.send_data()
            self.sent[op].inc()
            return True
        if session.outbox is None:
            session.outbox = deque()
            self._tasks.spawn(self._flush(session))
        if len(session.outbox) >= self._queue_max:
            self._drops.inc()
            session.close_reason = "slow_consumer"
            self.close_soon(session, CloseCode.SLOW_CONSUMER, "send queue overflow")
            return False
        session.outbox.append(frame)
        self.queued += 1
        self.sent[op].inc()
        return True

    async def _flush(self, session: Session) -> None:
        try:
            while session.outbox:
                frame = session.outbox.popleft()
                self.queued -= 1
                await session.ws.send(frame)
        except ConnectionClosed:
            pass
        finally:
            if session.outbox:
                self.queued -= len(session.outbox)
            session.outbox = None

    def ok(self, session: Session, ref: str | None) -> None:
        """The ``ok`` reply, sent only when the frame had a ref."""
        if ref is not None:
            self.push(session, encode({"op": "ok", "ref": ref}), "ok")

    def discard(self, session: Session) -> None:
        """Drop what is still queued for a session that is gone."""
        if session.outbox:
            self.queued -= len(session.outbox)
            session.outbox = None

    def close_soon(self, session: Session, code: int, why: str) -> None:
        self._tasks.spawn(session.ws.close(code, why))
