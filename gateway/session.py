"""A session (one authenticated device), the table of this node's sessions, and the outbox that
writes frames to them.

Per-connection cost is kept small on purpose (>= 30k idle sessions per GB): one ``Session``
with __slots__, no task of our own per connection (websockets runs the handler), frames written
straight to the transport while its buffer has room, and a bounded queue plus a short-lived
flusher task only when a client reads slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
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
CLOSE_TIMEOUT_S = 2.0  # for the closing handshake, after which the socket is aborted

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
    queued_bytes: int = 0  # characters in outbox (frames are ASCII JSON: bytes)
    drained: asyncio.Event | None = None  # set when outbox empties; made by a waiting sync
    subs: set[str] | None = None  # presence subscriptions
    syncing: int = 0  # > 0: live deliveries are held until the sync is done
    sync_started_at: float = 0.0  # monotonic: a sync started later covers what was lost before
    held: list[DeliveryItem] | None = None
    resync: bool = False


class SessionTable:
    """This node's open sessions, by user. ``open_count`` also counts connections that have
    not said hello yet (for the connection limit), ``pending_hellos`` only those, and
    ``by_ip`` every open connection by client IP."""

    def __init__(self) -> None:
        self.sessions: set[Session] = set()
        self.by_user: dict[str, list[Session]] = {}
        self.open_count = 0
        self.pending_hellos = 0
        self.by_ip: Counter[str] = Counter()

    def ip_opened(self, ip: str) -> None:
        self.by_ip[ip] += 1

    def ip_closed(self, ip: str) -> None:
        self.by_ip[ip] -= 1
        if self.by_ip[ip] <= 0:
            del self.by_ip[ip]  # the counter holds only IPs with connections

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
        self._queue_max_bytes = config.send_queue_max_bytes
        self._sync_budget = config.sync_byte_budget
        self._drain_timeout_s = config.sync_drain_timeout_s
        self._drops = metrics.send_queue_drops
        self._tasks = tasks
        # Label children resolved once: .labels() on the hot path costs a lock and a lookup.
        self.sent = {op: metrics.frames_out.labels(op) for op in SERVER_OPS}
        self.queued = 0  # frames waiting in the queues of all sessions
        self.queued_bytes = 0  # and their size

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
        size = len(frame)
        if (
            len(session.outbox) >= self._queue_max
            or session.queued_bytes + size > self._queue_max_bytes
        ):
            self._drops.inc()
            session.close_reason = "slow_consumer"
            self.close_soon(session, CloseCode.SLOW_CONSUMER, "send queue overflow")
            return False
        session.outbox.append(frame)
        session.queued_bytes += size
        self.queued += 1
        self.queued_bytes += size
        self.sent[op].inc()
        return True

    async def push_paced(self, session: Session, frame: str, op: str) -> bool:
        """Queue a frame of a sync once the session's queue is below the sync budget (half the
        frame limit, ``sync_byte_budget`` bytes): a sync pages at the client's reading speed
        instead of piling a conversation's history up in memory, and a client that sends
        ``sync`` after ``sync`` without reading gets no more than that queued. False if the
        session is gone, or wrote nothing for ``sync_drain_timeout_s``: it is then closed as
        a slow consumer."""
        while session.outbox is not None and (
            len(session.outbox) >= self._queue_max // 2
            or session.queued_bytes + len(frame) > self._sync_budget
        ):
            if session.close_reason is not None:
                return False
            if session.drained is None:
                session.drained = asyncio.Event()
            session.drained.clear()
            try:
                await asyncio.wait_for(session.drained.wait(), self._drain_timeout_s)
            except TimeoutError:
                if session.close_reason is None:
                    session.close_reason = "slow_consumer"
                    self.close_soon(session, CloseCode.SLOW_CONSUMER, "sync not read in time")
                return False
        return self.push(session, frame, op)

    async def _flush(self, session: Session) -> None:
        outbox = session.outbox
        try:
            while outbox:
                frame = outbox[0]  # stays counted while being written: it is held until then
                await session.ws.send(frame)
                if session.outbox is not outbox:
                    return  # discarded (the session closed) while the frame was written
                outbox.popleft()
                session.queued_bytes -= len(frame)
                self.queued -= 1
                self.queued_bytes -= len(frame)
                if session.drained is not None:
                    session.drained.set()  # progress: a waiting sync re-checks its budget
        except ConnectionClosed:
            pass
        finally:
            if session.outbox is outbox:
                self._forget_queue(session)

    def _forget_queue(self, session: Session) -> None:
        if session.outbox:
            self.queued -= len(session.outbox)
            self.queued_bytes -= session.queued_bytes
        session.outbox = None
        session.queued_bytes = 0
        if session.drained is not None:
            session.drained.set()  # a waiting sync goes on (or sees the session closed)

    def ok(self, session: Session, ref: str | None) -> None:
        """The ``ok`` reply, sent only when the frame had a ref."""
        if ref is not None:
            self.push(session, encode({"op": "ok", "ref": ref}), "ok")

    def discard(self, session: Session) -> None:
        """Drop what is still queued for a session that is gone."""
        self._forget_queue(session)

    def close_soon(self, session: Session, code: int, why: str) -> None:
        self._tasks.spawn(close_connection(session.ws, code, why))


async def close_connection(ws: ServerConnection, code: int, why: str) -> None:
    """Close with the handshake, or abort the socket after CLOSE_TIMEOUT_S. The bound matters
    for a peer that stopped reading: websockets' close() first waits for the send buffer to
    drain, and a full TCP window never drains, so the session (and its memory) would stay."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(code, why)
    except TimeoutError:
        ws.transport.abort()
