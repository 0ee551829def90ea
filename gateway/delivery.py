"""What reaches a device: sync (history after the device's cursors, from the recent cache or
Cassandra) and live deliveries (state.Delivery from the dispatcher, over pub/sub).

The two meet here because they must not leave a gap or a duplicate between them: while a sync
runs, live deliveries for that session are held, and released afterwards skipping the seqs the
sync already sent (session.marks).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram

from gateway import groups, state
from gateway.backends import Backends
from gateway.config import Config
from gateway.metrics import GatewayMetrics
from gateway.protocol import (
    GAP_FRAME_PREFIX,
    ErrorCode,
    ProtocolError,
    dm_members,
    encode,
    error_frame,
)
from gateway.session import Outbox, Session, SessionTable

log = logging.getLogger(__name__)


@dataclass(kw_only=True, slots=True, eq=False)
class Deliveries:
    config: Config
    metrics: GatewayMetrics
    backends: Backends
    table: SessionTable
    outbox: Outbox
    _delivered: Counter = field(init=False)
    _latency: Histogram = field(init=False)

    def __post_init__(self) -> None:
        self._delivered = self.metrics.messages_delivered
        self._latency = self.metrics.delivery_latency

    # Sync ------------------------------------------------------------------------------------

    async def sync(
        self,
        session: Session,
        cursors: dict[str, int],
        limit: int | None,
        ref: str | None,
        *,
        held: bool,
    ) -> None:
        """Everything after each cursor, from the Redis cache or Cassandra, then sync_done.

        Live deliveries for this session are held meanwhile and released afterwards, skipping
        seqs the sync already sent: no gap (the route was registered before reading) and no
        duplicate on this connection. ``held``: the caller already counted this sync in
        session.syncing (the connect-time sync, counted from hello on).
        """
        if not held:
            session.syncing += 1
        session.sync_started_at = time.monotonic()
        limit = min(limit or self.config.sync_limit, self.config.sync_limit)
        try:
            await self._sync(session, cursors, limit, ref)
        except ProtocolError as exc:
            self.metrics.protocol_errors.labels(exc.code).inc()
            answer = error_frame(exc.code, exc.message, ref if exc.ref is None else exc.ref)
            self.outbox.push(session, answer, "error")
        except Exception as exc:
            log.warning("sync failed for %s: %r", session.user, exc)
            self.metrics.protocol_errors.labels(ErrorCode.UNAVAILABLE).inc()
            failed = error_frame(ErrorCode.UNAVAILABLE, "sync failed, retry", ref)
            self.outbox.push(session, failed, "error")
        finally:
            session.syncing -= 1
            if session.syncing == 0:
                self._release_held(session)

    async def _sync(
        self, session: Session, cursors: dict[str, int], limit: int, ref: str | None
    ) -> None:
        user = session.user
        known = await self._user_conversations(user)
        targets = sorted(
            known | {c for c in cursors if (pair := dm_members(c)) is not None and user in pair}
        )
        # The index only says where to look: a group is read only while the user is a member
        # now (a leaver's entry, or one a record in flight at the leave put back, is skipped).
        allowed = await asyncio.gather(*(self._may_read(user, conv) for conv in targets))
        targets = [conv for conv, ok in zip(targets, allowed, strict=True) if ok]
        async with self.backends.redis.pipeline(transaction=False) as pipe:
            for conv in targets:
                pipe.hget(state.counter_key(conv), "seq")
            for conv in targets:
                pipe.hgetall(state.receipts_key(conv))
            answers = await pipe.execute()
        counters, receipts = answers[: len(targets)], answers[len(targets) :]
        done: dict[str, dict[str, Any]] = {}
        marks = session.marks if session.marks is not None else {}
        for conv, counter in zip(targets, counters, strict=True):
            cursor = cursors.get(conv, 0)
            # The hint only ever lags (a Redis restored from an older state): a hint below the
            # cursor is provably stale, so only an equal one skips the read.
            if counter is not None and int(counter) == cursor:
                done[conv] = {"last_seq": cursor, "complete": True}
                continue
            # One more than the limit: "complete" then says whether anything is left.
            hint = None if counter is None else int(counter)
            views, source, gaps = await self._read_after(conv, cursor, limit + 1, hint)
            more = len(views) > limit
            views = views[:limit]
            last = cursor
            if views:
                last = views[-1][0]
                gaps = [g for g in gaps if g[0] < last]
                for batch in sync_batches(conv, views, gaps, self.config.max_frame_bytes):
                    if not await self.outbox.push_paced(session, batch, "sync_batch"):
                        return  # gone, or closed as a slow consumer: nothing more to send
                self.metrics.synced_messages.labels(source).inc(len(views))
                marks[conv] = max(marks.get(conv, 0), last)
            done[conv] = {"last_seq": last, "complete": not more}
        session.marks = marks
        receipt_view = {
            conv: {f: int(s) for f, s in r.items() if state.receipt_field_user(f) != user}
            for conv, r in zip(targets, receipts, strict=True)
            if r
        }
        others = {c: r for c, r in receipt_view.items() if r}
        frame: dict[str, Any] = {"op": "sync_done", "conversations": done, "receipts": others}
        if ref is not None:
            frame["ref"] = ref
        self.outbox.push(session, encode(frame), "sync_done")

    async def _may_read(self, user: str, conv: str) -> bool:
        """Whether ``user`` may read ``conv``'s history now: a party of a 1:1 conversation, a
        current member of a group (gateway/groups.py)."""
        pair = dm_members(conv)
        if pair is not None:
            return user in pair
        if not conv.startswith("g:"):
            return False
        store = self.backends.store
        if not store.ready:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "group store not available yet")
        return user in await groups.group_members(self.backends.redis, store, conv[2:])

    async def _user_conversations(self, user: str) -> set[str]:
        key = state.user_conversations_key(user)
        redis, store = self.backends.redis, self.backends.store
        cached: set[str] = set(await redis.smembers(key))
        if state.COMPLETE in cached:
            cached.discard(state.COMPLETE)
            return cached
        if not store.ready:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "history store not available yet")
        loaded = await store.user_conversations(user)
        await redis.sadd(key, state.COMPLETE, *loaded)
        return set(loaded) | (cached - {state.COMPLETE})

    async def _read_after(
        self, conv: str, cursor: int, limit: int, hint: int | None
    ) -> tuple[list[tuple[int, str]], str, list[list[int]]]:
        """(seq, client JSON) after ``cursor``, the source, and the in-doubt ranges that explain
        the holes among them: from the recent cache when it covers the range without a hole,
        else from Cassandra (where a hole costs one more read, of ``seq_gaps``). Of the cache,
        only the tail that the seq hint says is newer than the cursor is read, unless that
        tail turns out too short (replayed entries, a lagging hint)."""
        size = self.config.recent_cache_size
        if size:
            redis, key = self.backends.redis, state.recent_key(conv)
            window = recent_window(cursor, hint, size)
            entries = await redis.lrange(key, -window, -1)
            cached = from_recent_cache(entries, cursor, limit)
            if cached is None and window < size and len(entries) == window:
                entries = await redis.lrange(key, 0, -1)
                cached = from_recent_cache(entries, cursor, limit)
            if cached is not None:
                return cached, "cache", []
        store = self.backends.store
        if not store.ready:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "history store not available yet")
        records = await store.read_after(conv, cursor, limit)
        views = [(r.seq, encode(r.client_view())) for r in records]
        gaps: list[list[int]] = []
        if holes(cursor, [seq for seq, _ in views]):
            last = views[-1][0]
            gaps = [[lo, hi] for lo, hi in await store.gaps(conv) if hi > cursor and lo < last]
        return views, "cassandra", gaps

    def _release_held(self, session: Session) -> None:
        held, session.held = session.held, None
        if held:
            self.deliver_to(session, held, time.time())
        if session.resync:
            session.resync = False
            again = encode({"op": "sync_required", "reason": "overflow"})
            self.outbox.push(session, again, "sync_required")

    # Live ------------------------------------------------------------------------------------

    def on_delivery(self, items: list[state.DeliveryItem]) -> None:
        now = time.time()
        by_user = self.table.by_user
        by_session: dict[Session, list[state.DeliveryItem]] = {}
        for item in items:
            for user in item.users:
                for session in by_user.get(user, ()):
                    by_session.setdefault(session, []).append(item)
        for session, session_items in by_session.items():
            if session.syncing:
                held = session.held if session.held is not None else []
                if len(held) + len(session_items) > self.config.send_queue_max:
                    session.resync = True  # too much while syncing: ask for another sync
                else:
                    held.extend(session_items)
                session.held = held
            else:
                self.deliver_to(session, session_items, now)

    def deliver_to(self, session: Session, items: list[state.DeliveryItem], now: float) -> None:
        marks = session.marks
        if marks is None:
            marks = session.marks = {}
        for _users, conv, seq, accepted_at, frame in items:
            if seq <= marks.get(conv, 0):
                self.metrics.messages_deduplicated.inc()
                continue
            marks[conv] = seq
            if frame.startswith(GAP_FRAME_PREFIX):  # an in-doubt range, not a message
                self.outbox.push(session, frame, "gap")
                continue
            if self.outbox.push(session, frame, "message"):
                self._delivered.inc()
                self._latency.observe(max(0.0, now - accepted_at / 1000))


def sync_batches(
    conv: str, views: list[tuple[int, str]], gaps: list[list[int]], max_bytes: int
) -> list[str]:
    """The ``sync_batch`` frames of one conversation's sync: its messages in seq order, split
    so that no frame is larger than ``max_bytes`` (UTF-8) unless it holds a single message; the
    in-doubt ranges go on the first frame (docs/protocol.md 4)."""
    head = '{"op":"sync_batch","conversation_id":' + json.dumps(conv) + ',"messages":['
    announced = "" if not gaps else ',"gaps":' + encode(gaps)  # type: ignore[arg-type]
    frames: list[str] = []
    chunk: list[str] = []
    size = len(head.encode()) + len(announced.encode()) + 2
    for _, view in views:
        grows = len(view.encode()) + 1
        if chunk and size + grows > max_bytes:
            frames.append(head + ",".join(chunk) + "]" + announced + "}")
            chunk, announced = [], ""
            size = len(head.encode()) + 2
        chunk.append(view)
        size += grows
    frames.append(head + ",".join(chunk) + "]" + announced + "}")
    return frames


RECENT_WINDOW_SLACK = 16  # cache entries read beyond the hint's count, for replayed seqs


def recent_window(cursor: int, hint: int | None, size: int) -> int:
    """How many of the newest recent-cache entries to read for a sync after ``cursor``: those
    the seq hint (the last persisted seq) says are newer, plus some slack; all without a
    usable hint. A hint only ever lags, so a short window is detected, never wrong."""
    if hint is None or hint <= cursor:
        return size
    return min(size, hint - cursor + RECENT_WINDOW_SLACK)


def from_recent_cache(entries: list[str], cursor: int, limit: int) -> list[tuple[int, str]] | None:
    """Messages after ``cursor`` from the recent cache (state.encode_recent entries, replays may
    repeat), or None when the cache cannot prove it holds every seq from cursor + 1 on.

    Anything newer than the cache's last entry is not routed yet, so it still arrives live.
    """
    by_seq: dict[int, str] = {}
    for entry in entries:
        seq, view = state.decode_recent(entry)
        by_seq[seq] = view
    if not by_seq or min(by_seq) > cursor + 1:
        return None
    wanted = sorted(s for s in by_seq if s > cursor)
    if holes(cursor, wanted):
        return None  # in-doubt ranges are announced from Cassandra (seq_gaps)
    return [(s, by_seq[s]) for s in wanted[:limit]]


def holes(cursor: int, seqs: list[int]) -> bool:
    """Whether ascending ``seqs`` miss anything between cursor + 1 and their last one."""
    if not seqs:
        return False
    return seqs[0] != cursor + 1 or any(b - a != 1 for a, b in itertools.pairwise(seqs))
