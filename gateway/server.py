"""The IM gateway: WebSocket sessions at /ws, plus /healthz, /readyz and /metrics on the same port.

Run: ``python -m gateway.server``. The protocol is specified in docs/protocol.md.

Per-connection cost is kept small on purpose (>= 30k idle sessions per GB): one ``Session``
with __slots__, no task of our own per connection (websockets runs the handler), frames written
straight to the transport while its buffer has room, and a bounded queue plus a short-lived
flusher task only when a client reads slowly.
"""

# Heavy client libraries are imported where first used, so the process listens fast.

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import random
import signal
import sys
import time
from collections import deque
from typing import Any, NamedTuple

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from gateway import groups, redis_client, state
from gateway.auth import AuthError, TokenVerifier
from gateway.config import Config, load_or_exit
from gateway.limits import TokenBucket, drain_schedule
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
    dm_conversation,
    dm_members,
    encode,
    error_frame,
    group_conversation,
    message_id,
    parse_frame,
)
from gateway.runtime import backoff, http_route, in_daemon_thread, request_path, setup_logging
from gateway.store import CassandraStore, close_store

log = logging.getLogger("gateway.server")

MAX_PROTOCOL_ERRORS = 20  # bad frames tolerated per session before closing with 4000
WRITE_LIMIT = 64 * 1024  # socket write buffer above which frames are queued instead
CLOSE_TIMEOUT_S = 2.0


class _PendingSend(NamedTuple):
    session: Session
    frame: Send
    conv: str
    mid: str
    accepted_at: int
    key: str
    started: float


class Session:
    """One authenticated WebSocket session (one device)."""

    __slots__ = (
        "bucket",
        "close_reason",
        "device",
        "errors",
        "expires_at",
        "held",
        "last_rx",
        "marks",
        "outbox",
        "resync",
        "subs",
        "syncing",
        "user",
        "violations",
        "ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        user: str,
        device: str,
        *,
        expires_at: float,
        bucket: TokenBucket,
        now: float,
    ) -> None:
        self.ws = ws
        self.user = user
        self.device = device
        self.expires_at = expires_at
        self.bucket = bucket
        self.last_rx = now
        self.errors = 0
        self.violations = 0
        self.close_reason: str | None = None
        self.marks: dict[str, int] | None = None  # conversation -> highest seq sent
        self.outbox: deque[str] | None = None  # only while the socket is backed up
        self.subs: set[str] | None = None  # presence subscriptions
        self.syncing = 0  # > 0: live deliveries are held until the sync is done
        self.held: list[list[Any]] | None = None
        self.resync = False


class Gateway:
    def __init__(self, config: Config, verifier: TokenVerifier) -> None:
        self.cfg = config
        self.verifier = verifier
        self.metrics = m = GatewayMetrics()
        self.sessions: set[Session] = set()
        self.by_user: dict[str, list[Session]] = {}
        self.watchers: dict[str, set[Session]] = {}
        self.open_count = 0
        self.draining = False
        self.stop = asyncio.Event()
        self.redis: Any = None
        self.producer: Any = None
        self.kafka_ok = False
        self.redis_ok = False
        self.pubsub_ok = False
        self.store = CassandraStore(
            config.host_ports("cassandra_hosts"),
            config.cassandra_keyspace,
            config.cassandra_bucket_s,
        )
        self.channel = state.node_channel(config.node_id)
        self._marks: list[tuple[str, str]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queued = 0
        self._max_receipt: Any = None
        # Label children resolved once: .labels() on the hot path costs a lock and a lookup.
        self._in = {op: m.frames_in.labels(op) for op in (*CLIENT_OPS, "invalid")}
        self._out = {
            op: m.frames_out.labels(op)
            for op in (
                "welcome",
                "pong",
                "ack",
                "message",
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
        }
        self._delivered = m.messages_delivered
        self._latency = m.delivery_latency
        for backend in ("kafka", "redis", "cassandra"):
            m.backend_up.labels(backend).set(0)
        m.connections_limit.set(config.max_connections)
        # Dedup claims and durable marks of all sessions, written together in one Redis
        # pipeline per event-loop turn.
        self._claims: list[tuple[str, str, asyncio.Future[str | None]]] = []
        self._dedup_task: asyncio.Task[None] | None = None

    # HTTP and admission ----------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self.kafka_ok:
            return False, "kafka unavailable"
        if not (self.redis_ok and self.pubsub_ok):
            return False, "redis unavailable"
        if not self.store.ready:
            # Sync and groups need Cassandra: a session admitted before the first connect
            # would get an error instead of sync_done.
            return False, "cassandra not connected yet"
        return True, "ready"

    def _render(self) -> bytes:
        self.metrics.ready.set(1 if self.readiness()[0] else 0)
        self.metrics.send_queue_depth.set(self._queued)
        return self.metrics.render()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request_path(request)
        response = http_route(connection, path, ready=self.readiness, render_metrics=self._render)
        if response is not None:
            return response
        if path != "/ws":
            return connection.respond(404, "not found; the WebSocket endpoint is /ws\n")
        refusal = None
        if self.draining:
            refusal = "draining"
        elif not self.readiness()[0]:
            refusal = "not_ready"
        elif self.open_count >= self.cfg.max_connections:
            refusal = "server_full"
        if refusal is None:
            return None
        self.metrics.connects.labels(refusal).inc()
        response = connection.respond(503, refusal + "\n")
        response.headers["Retry-After"] = "1"
        return response

    # Session lifecycle -----------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        self.open_count += 1
        session: Session | None = None
        reason = "client_close"
        try:
            opened = await self._authenticate(ws)
            if opened is None:
                return
            session, hello = opened
            if not await self._open(session, hello):
                session = None
                return
            reason = await self._serve(session)
        except ConnectionClosed:
            reason = _closed_reason(ws)
        except Exception:
            log.exception("session failed")
            reason = "error"
            with contextlib.suppress(Exception):
                await ws.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self.open_count -= 1
            if session is not None:
                await self._close(session, session.close_reason or reason)

    async def _authenticate(self, ws: ServerConnection) -> tuple[Session, Hello] | None:
        try:
            raw = await asyncio.wait_for(ws.recv(), self.cfg.hello_timeout_s)
        except TimeoutError:
            self.metrics.connects.labels("hello_timeout").inc()
            await ws.close(CloseCode.HELLO_TIMEOUT, "no hello frame in time")
            return None
        except ConnectionClosed:
            self.metrics.connects.labels("closed_before_hello").inc()
            return None
        try:
            frame = parse_frame(raw, self.cfg.max_frame_bytes)
            if not isinstance(frame, Hello):
                raise ProtocolError(ErrorCode.NOT_AUTHENTICATED, "the first frame must be hello")
        except ProtocolError as exc:
            self._in["invalid"].inc()
            self.metrics.protocol_errors.labels(exc.code).inc()
            self.metrics.connects.labels("protocol_error").inc()
            await self._send_then_close(
                ws, error_frame(exc.code, exc.message, exc.ref), CloseCode.PROTOCOL_ERROR, exc.code
            )
            return None
        self._in["hello"].inc()
        token = frame.token or _bearer(
            ws.request.headers.get("Authorization") if ws.request else None
        )
        try:
            identity = self.verifier.verify(token)
        except AuthError as exc:
            self.metrics.auth_failures.labels(exc.reason).inc()
            self.metrics.connects.labels("auth_failed").inc()
            code = CloseCode.TOKEN_EXPIRED if exc.expired else CloseCode.UNAUTHORIZED
            await self._send_then_close(
                ws,
                error_frame(
                    ErrorCode.TOKEN_EXPIRED if exc.expired else ErrorCode.UNAUTHORIZED,
                    exc.reason,
                    frame.ref,
                ),
                code,
                exc.reason,
            )
            return None
        now = time.monotonic()
        bucket = TokenBucket(self.cfg.rate_limit_per_s, self.cfg.rate_limit_burst, now)
        session = Session(
            ws,
            identity.user_id,
            frame.device_id,
            expires_at=identity.expires_at,
            bucket=bucket,
            now=now,
        )
        if frame.cursors is not None:
            session.syncing = 1  # hold live deliveries until the connect-time sync is done
        return session, frame

    async def _send_then_close(self, ws: ServerConnection, frame: str, code: int, why: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(frame)
            self._out["error"].inc()
            await ws.close(code, why[:100])

    async def _open(self, session: Session, hello: Hello) -> bool:
        """Register the session locally and in the route registry, then welcome and sync."""
        user = session.user
        devices = self.by_user.setdefault(user, [])
        for old in [s for s in devices if s.device == session.device]:
            old.close_reason = "replaced"
            self._close_soon(old, CloseCode.REPLACED, "replaced by a newer session of this device")
        devices.append(session)
        self.sessions.add(session)
        self.metrics.connections_active.inc()
        try:
            try:
                await self._register_route(user, first_here=len(devices) == 1)
            except Exception:  # one retry: a pool connect can time out under a connect burst
                await asyncio.sleep(0.05)
                await self._register_route(user, first_here=len(devices) == 1)
        except Exception as exc:
            log.warning("route registration failed for %s: %r", user, exc)
            self._forget(session)
            self.metrics.connects.labels("backend_error").inc()
            self.metrics.disconnects.labels("backend_error").inc()
            with contextlib.suppress(Exception):
                await session.ws.close(CloseCode.TRY_AGAIN_LATER, "backend unavailable")
            return False
        self.metrics.connects.labels("accepted").inc()
        welcome = {
            "op": "welcome",
            "protocol": PROTOCOL_VERSION,
            "user_id": user,
            "device_id": session.device,
            "node_id": self.cfg.node_id,
            "heartbeat_interval_s": self.cfg.heartbeat_interval_s,
            "idle_timeout_s": self.cfg.idle_timeout_s,
            "max_frame_bytes": self.cfg.max_frame_bytes,
            "rate_limit_per_s": self.cfg.rate_limit_per_s,
            "rate_limit_burst": self.cfg.rate_limit_burst,
            "send_queue_max": self.cfg.send_queue_max,
            "server_time": int(time.time() * 1000),
        }
        if hello.ref is not None:
            welcome["ref"] = hello.ref
        self.push(session, encode(welcome), "welcome")
        if hello.cursors is not None:
            await self._sync(session, hello.cursors, hello.sync_limit, hello.ref, held=True)
        return True

    async def _serve(self, session: Session) -> str:
        max_bytes = self.cfg.max_frame_bytes
        async for raw in session.ws:
            now = time.monotonic()
            session.last_rx = now
            try:
                frame = parse_frame(raw, max_bytes)
                self._in[_op_of(frame)].inc()
                if not session.bucket.take(now):
                    self.metrics.rate_limited.inc()
                    session.violations += 1
                    if session.violations > self.cfg.rate_limit_burst:
                        session.close_reason = "rate_limited"
                        await session.ws.close(CloseCode.RATE_LIMITED, "rate limit exceeded")
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
                if exc.code in (ErrorCode.BAD_JSON, ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_OP):
                    self._in["invalid"].inc()
                self.metrics.protocol_errors.labels(exc.code).inc()
                self.push(session, error_frame(exc.code, exc.message, exc.ref), "error")
                if exc.code != ErrorCode.RATE_LIMITED:
                    session.errors += 1
                if session.errors > MAX_PROTOCOL_ERRORS:
                    session.close_reason = "protocol_error"
                    await session.ws.close(CloseCode.PROTOCOL_ERROR, "too many bad frames")
                    return "protocol_error"
            except Exception:  # a bug must cost one frame, not the session or the process
                log.exception("frame handling failed for %s", session.user)
                self.metrics.protocol_errors.labels(ErrorCode.INTERNAL).inc()
                self.push(session, error_frame(ErrorCode.INTERNAL, "internal error"), "error")
        return _closed_reason(session.ws)

    async def _close(self, session: Session, reason: str) -> None:
        self._forget(session)
        self.metrics.disconnects.labels(reason).inc()
        if self.by_user.get(session.user):
            return
        try:
            await asyncio.wait_for(self._unregister_route(session.user), 2)
        except Exception as exc:  # the route expires by itself after route_ttl_s
            log.debug("route removal failed for %s: %r", session.user, exc)

    def _forget(self, session: Session) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        self.metrics.connections_active.dec()
        devices = self.by_user.get(session.user)
        if devices is not None:
            with contextlib.suppress(ValueError):
                devices.remove(session)
            if not devices:
                del self.by_user[session.user]
        if session.subs:
            for user in session.subs:
                watchers = self.watchers.get(user)
                if watchers is not None:
                    watchers.discard(session)
                    if not watchers:
                        del self.watchers[user]
        if session.outbox:
            self._queued -= len(session.outbox)
            session.outbox = None

    def _close_soon(self, session: Session, code: int, why: str) -> None:
        self._spawn(session.ws.close(code, why))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Outbound --------------------------------------------------------------------------------

    def push(self, session: Session, frame: str, op: str) -> bool:
        """Queue one frame for a session without blocking; False if it was dropped."""
        ws = session.ws
        if ws.protocol.state is not State.OPEN or session.close_reason is not None:
            return False
        if session.outbox is None and ws.transport.get_write_buffer_size() < WRITE_LIMIT:
            # Fast path, no task: what ws.send() does minus waiting for the buffer to drain.
            ws.protocol.send_text(frame.encode())
            ws.send_data()
            self._out[op].inc()
            return True
        if session.outbox is None:
            session.outbox = deque()
            self._spawn(self._flush(session))
        if len(session.outbox) >= self.cfg.send_queue_max:
            self.metrics.send_queue_drops.inc()
            session.close_reason = "slow_consumer"
            self._close_soon(session, CloseCode.SLOW_CONSUMER, "send queue overflow")
            return False
        session.outbox.append(frame)
        self._queued += 1
        self._out[op].inc()
        return True

    async def _flush(self, session: Session) -> None:
        try:
            while session.outbox:
                frame = session.outbox.popleft()
                self._queued -= 1
                await session.ws.send(frame)
        except ConnectionClosed:
            pass
        finally:
            if session.outbox:
                self._queued -= len(session.outbox)
            session.outbox = None

    # Frames ----------------------------------------------------------------------------------

    async def _dispatch(self, session: Session, frame: Any) -> None:
        if isinstance(frame, Send):
            await self._on_send(session, frame)
        elif isinstance(frame, Ping):
            pong: dict[str, Any] = {"op": "pong", "server_time": int(time.time() * 1000)}
            if frame.ref is not None:
                pong["ref"] = frame.ref
            self.push(session, encode(pong), "pong")
        elif isinstance(frame, Receipt):
            await self._on_receipt(session, frame)
        elif isinstance(frame, Sync):
            await self._sync(session, frame.cursors, frame.limit, frame.ref, held=False)
        elif isinstance(frame, Presence):
            await self._on_presence(session, frame)
        elif isinstance(frame, Group):
            await self._on_group(session, frame)
        elif isinstance(frame, Hello):
            raise ProtocolError(ErrorCode.ALREADY_AUTHENTICATED, "already authenticated", frame.ref)

    async def _on_send(self, session: Session, frame: Send) -> None:
        user = session.user
        if frame.group_id is not None:
            conv = group_conversation(frame.group_id)
            if not await self._is_member(frame.group_id, user, frame.ref):
                self.metrics.messages_failed.labels("not_member").inc()
                raise ProtocolError(ErrorCode.NOT_MEMBER, "not a member of this group", frame.ref)
        else:
            assert frame.to is not None
            conv = dm_conversation(user, frame.to)
        key = state.dedup_key(user, frame.client_msg_id)
        accepted_at = int(time.time() * 1000)
        try:
            previous = await self._claim(key, f"p|{conv}|{accepted_at}")
        except Exception as exc:
            self.metrics.messages_failed.labels("redis").inc()
            raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", frame.ref) from exc
        mid = message_id(user, frame.client_msg_id)
        if previous is not None:
            status, old_conv, old_ts = previous.split("|")
            if old_conv != conv:
                self.metrics.messages_failed.labels("duplicate_id").inc()
                raise ProtocolError(
                    ErrorCode.DUPLICATE_ID,
                    "client_msg_id already used for another conversation",
                    frame.ref,
                )
            accepted_at = int(old_ts)
            self.metrics.messages_duplicate.inc()
            if status == "a":
                self._ack(session, frame, conv, mid, accepted_at)
                return
            # "p": accepted earlier but not known durable (in flight, or the gateway died):
            # produce again; the dispatcher keys seqs by message id, so it stays one message.
        record = {
            "v": 1,
            "mid": mid,
            "conv": conv,
            "kind": "group" if frame.group_id else "dm",
            "from": user,
            "dev": session.device,
            "cmid": frame.client_msg_id,
            "body": frame.body,
            "ts": accepted_at,
            "gw": self.cfg.node_id,
        }
        if frame.group_id:
            record["gid"] = frame.group_id
        else:
            record["to"] = frame.to
        started = time.perf_counter()
        try:
            future = await self.producer.send(
                self.cfg.kafka_topic, value=encode(record).encode(), key=conv.encode()
            )
        except Exception as exc:
            self.metrics.messages_failed.labels("kafka").inc()
            raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", frame.ref) from exc
        # No task per message: the ack is written from the delivery callback.
        pending = _PendingSend(session, frame, conv, mid, accepted_at, key, started)
        future.add_done_callback(functools.partial(self._produced, pending))

    def _claim(self, key: str, value: str) -> asyncio.Future[str | None]:
        """SET key value NX GET, batched with the other sessions' claims of this loop turn
        (one pipeline instead of a round trip and a pool checkout per message)."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._claims.append((key, value, future))
        self._schedule_dedup_writes()
        return future

    def _mark_durable(self, key: str, value: str) -> None:
        """'Acknowledged' marks ride along with the next claims pipeline, off the hot path."""
        self._marks.append((key, value))
        self._schedule_dedup_writes()

    def _schedule_dedup_writes(self) -> None:
        if self._dedup_task is None:
            self._dedup_task = asyncio.ensure_future(self._write_dedup())

    async def _write_dedup(self) -> None:
        try:
            while self._claims or self._marks:
                await asyncio.sleep(0)  # let the frames and acks of this loop turn join
                claims, self._claims = self._claims, []
                marks, self._marks = self._marks, []
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for key, value, _ in claims:
                            pipe.set(key, value, nx=True, ex=self.cfg.dedup_ttl_s, get=True)
                        for key, value in marks:
                            pipe.set(key, value, xx=True, keepttl=True)
                        results = await pipe.execute(raise_on_error=False)
                except Exception as exc:  # lost marks only mean a resend re-produces
                    results = [exc] * (len(claims) + len(marks))
                for (_, _, future), result in zip(claims, results, strict=False):
                    if future.done():  # the session went away meanwhile
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(ConnectionError(repr(result)))
                    else:
                        future.set_result(result)
        finally:
            self._dedup_task = None

    def _produced(self, pending: _PendingSend, future: asyncio.Future[Any]) -> None:
        session, frame, conv, mid, accepted_at, key, started = pending
        if future.cancelled() or future.exception() is not None:
            self.metrics.messages_failed.labels("kafka").inc()
            self.metrics.protocol_errors.labels(ErrorCode.UNAVAILABLE).inc()
            self.push(session, error_frame(ErrorCode.UNAVAILABLE, "try again", frame.ref), "error")
            return
        self.metrics.kafka_produce_latency.observe(time.perf_counter() - started)
        self.metrics.messages_accepted.inc()
        self._mark_durable(key, f"a|{conv}|{accepted_at}")
        self._ack(session, frame, conv, mid, accepted_at)

    def _ack(self, session: Session, frame: Send, conv: str, mid: str, accepted_at: int) -> None:
        ack = {
            "op": "ack",
            "ref": frame.ref,
            "client_msg_id": frame.client_msg_id,
            "message_id": mid,
            "conversation_id": conv,
            "accepted_at": accepted_at,
        }
        self.push(session, encode(ack), "ack")

    async def _is_member(self, group_id: str, user: str, ref: str | None) -> bool:
        try:
            return user in await groups.group_members(self.redis, self.store, group_id)
        except Exception as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", ref) from exc

    async def _conversation_members(
        self, session: Session, conv: str, ref: str | None
    ) -> list[str]:
        pair = dm_members(conv)
        if pair is not None:
            members = list(dict.fromkeys(pair))
        else:
            try:
                members = await groups.group_members(self.redis, self.store, conv[2:])
            except Exception as exc:
                raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", ref) from exc
        if session.user not in members:
            raise ProtocolError(ErrorCode.NOT_MEMBER, "not a member of this conversation", ref)
        return members

    async def _on_receipt(self, session: Session, frame: Receipt) -> None:
        conv = frame.conversation_id
        members = await self._conversation_members(session, conv, frame.ref)
        field = f"{session.user}|{session.device}|{frame.kind}"
        try:
            moved = await self._max_receipt(
                keys=[state.receipts_key(conv)], args=[field, frame.seq]
            )
            if moved:
                receipt = {
                    "op": "receipt",
                    "conversation_id": conv,
                    "user_id": session.user,
                    "device_id": session.device,
                    "seq": frame.seq,
                    "kind": frame.kind,
                }
                payload = {
                    "t": "r",
                    "u": members,
                    "skip": [session.user, session.device],
                    "f": encode(receipt),
                }
                await self._publish_to_users(members, encode(payload))
        except Exception as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", frame.ref) from exc
        self.metrics.receipts.inc()
        self._ok(session, frame.ref)

    def _ok(self, session: Session, ref: str | None) -> None:
        if ref is not None:
            self.push(session, encode({"op": "ok", "ref": ref}), "ok")

    async def _publish_to_users(self, users: list[str], payload: str) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.zrangebyscore(state.route_key(user), now, "+inf")
            routes = await pipe.execute()
        nodes = {node for found in routes for node in found}
        if nodes:
            async with self.redis.pipeline(transaction=False) as pipe:
                for node in nodes:
                    pipe.spublish(state.node_channel(node), payload)
                await pipe.execute()

    # Sync ------------------------------------------------------------------------------------

    async def _sync(
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
        duplicate on this connection.
        """
        if not held:
            session.syncing += 1
        limit = min(limit or self.cfg.sync_limit, self.cfg.sync_limit)
        try:
            await self._sync_inner(session, cursors, limit, ref)
        except ProtocolError as exc:
            self.metrics.protocol_errors.labels(exc.code).inc()
            answer = error_frame(exc.code, exc.message, ref if exc.ref is None else exc.ref)
            self.push(session, answer, "error")
        except Exception as exc:
            log.warning("sync failed for %s: %r", session.user, exc)
            self.metrics.protocol_errors.labels(ErrorCode.UNAVAILABLE).inc()
            self.push(
                session, error_frame(ErrorCode.UNAVAILABLE, "sync failed, retry", ref), "error"
            )
        finally:
            session.syncing -= 1
            if session.syncing == 0:
                self._release_held(session)

    async def _sync_inner(
        self, session: Session, cursors: dict[str, int], limit: int, ref: str | None
    ) -> None:
        user = session.user
        known = await self._user_conversations(user)
        targets = sorted(
            known | {c for c in cursors if (pair := dm_members(c)) is not None and user in pair}
        )
        async with self.redis.pipeline(transaction=False) as pipe:
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
            if counter is not None and int(counter) <= cursor:
                done[conv] = {"last_seq": cursor, "complete": True}
                continue
            views, source = await self._read_after(conv, cursor, limit)
            last = cursor
            if views:
                last = views[-1][0]
                batch = (
                    '{"op":"sync_batch","conversation_id":'
                    + json.dumps(conv)
                    + (',"messages":[' + ",".join(v for _, v in views) + "]}")
                )
                self.push(session, batch, "sync_batch")
                self.metrics.synced_messages.labels(source).inc(len(views))
                marks[conv] = max(marks.get(conv, 0), last)
            done[conv] = {"last_seq": last, "complete": len(views) < limit}
        session.marks = marks
        receipt_view = {
            conv: {f: int(s) for f, s in r.items() if not f.startswith(user + "|")}
            for conv, r in zip(targets, receipts, strict=True)
            if r
        }
        others = {c: r for c, r in receipt_view.items() if r}
        frame: dict[str, Any] = {"op": "sync_done", "conversations": done, "receipts": others}
        if ref is not None:
            frame["ref"] = ref
        self.push(session, encode(frame), "sync_done")

    async def _user_conversations(self, user: str) -> set[str]:
        key = state.user_conversations_key(user)
        cached: set[str] = set(await self.redis.smembers(key))
        if state.COMPLETE in cached:
            cached.discard(state.COMPLETE)
            return cached
        if not self.store.ready:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "history store not available yet")
        loaded = await self.store.user_conversations(user)
        await self.redis.sadd(key, state.COMPLETE, *loaded)
        return set(loaded) | (cached - {state.COMPLETE})

    async def _read_after(
        self, conv: str, cursor: int, limit: int
    ) -> tuple[list[tuple[int, str]], str]:
        """(seq, client JSON) after ``cursor``: from the recent cache when it covers the range
        without a hole, else from Cassandra."""
        if self.cfg.recent_cache_size:
            entries = await self.redis.lrange(state.recent_key(conv), 0, -1)
            cached = from_recent_cache(entries, cursor, limit)
            if cached is not None:
                return cached, "cache"
        if not self.store.ready:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "history store not available yet")
        records = await self.store.read_after(conv, cursor, limit)
        return [(r.seq, encode(r.client_view())) for r in records], "cassandra"

    def _release_held(self, session: Session) -> None:
        held, session.held = session.held, None
        if held:
            self._deliver_to(session, held, time.time())
        if session.resync:
            session.resync = False
            self.push(
                session, encode({"op": "sync_required", "reason": "overflow"}), "sync_required"
            )

    # Live delivery ---------------------------------------------------------------------------

    def _on_delivery(self, items: list[list[Any]]) -> None:
        now = time.time()
        by_session: dict[Session, list[list[Any]]] = {}
        for item in items:
            for user in item[0]:
                for session in self.by_user.get(user, ()):
                    by_session.setdefault(session, []).append(item)
        for session, session_items in by_session.items():
            if session.syncing:
                held = session.held if session.held is not None else []
                if len(held) + len(session_items) > self.cfg.send_queue_max:
                    session.resync = True  # too much while syncing: ask for another sync
                else:
                    held.extend(session_items)
                session.held = held
            else:
                self._deliver_to(session, session_items, now)

    def _deliver_to(self, session: Session, items: list[list[Any]], now: float) -> None:
        marks = session.marks
        if marks is None:
            marks = session.marks = {}
        for _users, conv, seq, accepted_at, frame in items:
            if seq <= marks.get(conv, 0):
                self.metrics.messages_deduplicated.inc()
                continue
            marks[conv] = seq
            if self.push(session, frame, "message"):
                self._delivered.inc()
                self._latency.observe(max(0.0, now - accepted_at / 1000))

    def _on_receipt_event(self, payload: dict[str, Any]) -> None:
        skip_user, skip_device = payload.get("skip") or (None, None)
        for user in payload["u"]:
            for session in self.by_user.get(user, ()):
                if user == skip_user and session.device == skip_device:
                    continue
                self.push(session, payload["f"], "receipt")

    def _on_presence_event(self, payload: dict[str, Any]) -> None:
        watchers = self.watchers.get(payload["u"])
        if not watchers:
            return
        frame = encode({"op": "presence", "statuses": {payload["u"]: payload["s"]}})
        for session in list(watchers):
            self.push(session, frame, "presence")

    # Presence --------------------------------------------------------------------------------

    async def _statuses(self, users: tuple[str, ...]) -> dict[str, str]:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.zcount(state.route_key(user), now, "+inf")
            counts = await pipe.execute()
        return {u: "online" if c else "offline" for u, c in zip(users, counts, strict=True)}

    async def _on_presence(self, session: Session, frame: Presence) -> None:
        if frame.op == "presence_unsubscribe":
            for user in frame.users:
                if session.subs:
                    session.subs.discard(user)
                watchers = self.watchers.get(user)
                if watchers:
                    watchers.discard(session)
                    if not watchers:
                        del self.watchers[user]
            self._ok(session, frame.ref)
            return
        if frame.op == "presence_subscribe":
            subs = session.subs if session.subs is not None else set()
            if len(subs | set(frame.users)) > 1000:
                raise ProtocolError(ErrorCode.TOO_MANY, "at most 1000 subscriptions", frame.ref)
            subs.update(frame.users)
            session.subs = subs
            for user in frame.users:
                self.watchers.setdefault(user, set()).add(session)
        try:
            statuses = await self._statuses(frame.users)
        except Exception as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", frame.ref) from exc
        reply: dict[str, Any] = {"op": "presence", "statuses": statuses}
        if frame.ref is not None:
            reply["ref"] = frame.ref
        self.push(session, encode(reply), "presence")

    async def _register_route(self, user: str, *, first_here: bool) -> None:
        now = time.time()
        key = state.route_key(user)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(key, now, "+inf")
            pipe.zadd(key, {self.cfg.node_id: now + self.cfg.route_ttl_s})
            pipe.expire(key, self.cfg.route_ttl_s)
            online_before = (await pipe.execute())[0]
        if first_here and not online_before:
            await self.redis.spublish(state.PRESENCE_CHANNEL, encode({"u": user, "s": "online"}))

    async def _unregister_route(self, user: str) -> None:
        key = state.route_key(user)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(key, self.cfg.node_id)
            pipe.zcount(key, time.time(), "+inf")
            _, remaining = await pipe.execute()
        if not remaining:
            await self.redis.spublish(state.PRESENCE_CHANNEL, encode({"u": user, "s": "offline"}))

    async def _refresh_routes(self) -> None:
        users = list(self.by_user)
        expiry = time.time() + self.cfg.route_ttl_s
        for start in range(0, len(users), 500):
            async with self.redis.pipeline(transaction=False) as pipe:
                for user in users[start : start + 500]:
                    key = state.route_key(user)
                    pipe.zadd(key, {self.cfg.node_id: expiry})
                    pipe.zremrangebyscore(key, "-inf", time.time())
                    pipe.expire(key, self.cfg.route_ttl_s)
                await pipe.execute()

    # Groups ----------------------------------------------------------------------------------

    async def _on_group(self, session: Session, frame: Group) -> None:
        if not self.store.ready:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "group store not available yet", frame.ref)
        gid = frame.group_id
        try:
            await self._change_group(session, frame)
            members = await groups.group_members(self.redis, self.store, gid)
        except ProtocolError:
            raise
        except Exception as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", frame.ref) from exc
        if frame.op == "group_members" and session.user not in members:
            raise ProtocolError(ErrorCode.NOT_MEMBER, "not a member of this group", frame.ref)
        reply: dict[str, Any] = {
            "op": "group",
            "group_id": gid,
            "conversation_id": group_conversation(gid),
            "members": members,
        }
        if frame.ref is not None:
            reply["ref"] = frame.ref
        self.push(session, encode(reply), "group")

    async def _change_group(self, session: Session, frame: Group) -> None:
        gid, user, conv = frame.group_id, session.user, group_conversation(frame.group_id)
        limit = self.cfg.max_group_members
        if frame.op == "group_create":
            members = list(dict.fromkeys([user, *frame.members]))
            if len(members) > limit:
                raise ProtocolError(ErrorCode.TOO_MANY, f"at most {limit} members", frame.ref)
            if not await self.store.create_group(gid, user, members):
                raise ProtocolError(ErrorCode.GROUP_EXISTS, "group id taken", frame.ref)
            await self._index(members, conv)
        elif frame.op == "group_join":
            if not await self.store.group_exists(gid):
                raise ProtocolError(ErrorCode.NOT_FOUND, "no such group", frame.ref)
            if len(await self.store.members(gid)) >= limit:
                raise ProtocolError(ErrorCode.TOO_MANY, "group is full", frame.ref)
            await self.store.add_member(gid, user)
            await self._index([user], conv)
        elif frame.op == "group_leave":
            await self.store.remove_member(gid, user)
        else:
            return
        await groups.invalidate(self.redis, gid)

    async def _index(self, users: list[str], conv: str) -> None:
        await self.store.add_user_conversations((u, conv) for u in users)
        async with self.redis.pipeline(transaction=False) as pipe:
            for u in users:
                pipe.sadd(state.user_conversations_key(u), conv)
            await pipe.execute()

    # Background loops ------------------------------------------------------------------------

    async def _pubsub_loop(self) -> None:
        attempt = 0
        first = True
        while not self.stop.is_set():
            subscription = redis_client.Subscription(
                self.redis, [self.channel, state.PRESENCE_CHANNEL]
            )
            try:
                await subscription.open()
                if not first:
                    # Redis came back: re-register every route, then ask every device to sync,
                    # since deliveries published while we were unsubscribed are gone.
                    await self._refresh_routes()
                    self.metrics.pubsub_reconnects.inc()
                    frame = encode({"op": "sync_required", "reason": "backend_recovered"})
                    for session in list(self.sessions):
                        self.push(session, frame, "sync_required")
                first = False
                self.pubsub_ok = True
                attempt = 0
                await subscription.run(self._on_pubsub)
                raise ConnectionError("pub/sub ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.pubsub_ok:
                    log.warning("redis pub/sub lost: %r", exc)
                self.pubsub_ok = False
                first = False
                await asyncio.sleep(backoff(attempt))
                attempt += 1
            finally:
                await subscription.aclose()

    def _on_pubsub(self, channel: str, data: str) -> None:
        try:
            payload = json.loads(data)
            if channel == self.channel:
                if payload["t"] == "d":
                    self._on_delivery(payload["items"])
                elif payload["t"] == "r":
                    self._on_receipt_event(payload)
            else:
                self._on_presence_event(payload)
        except Exception:
            log.exception("bad pub/sub payload on %s", channel)

    async def _health_loop(self) -> None:
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.redis.ping(), 2)
                self.redis_ok = True
            except Exception:
                self.redis_ok = False
            try:
                await asyncio.wait_for(self.producer.client.fetch_all_metadata(), 3)
                self.kafka_ok = True
            except Exception:
                self.kafka_ok = False
            m = self.metrics.backend_up
            m.labels("redis").set(1 if self.redis_ok else 0)
            m.labels("kafka").set(1 if self.kafka_ok else 0)
            m.labels("cassandra").set(1 if self.store.ready else 0)
            await asyncio.sleep(1.0)

    async def _sweep_loop(self) -> None:
        """Idle timeouts, expired tokens and route refresh, for all sessions in one task."""
        last_refresh = time.monotonic()
        while not self.stop.is_set():
            await asyncio.sleep(1.0)
            now, wall = time.monotonic(), time.time()
            idle_limit = self.cfg.idle_timeout_s
            for session in list(self.sessions):
                if session.close_reason is not None:
                    continue
                if now - session.last_rx > idle_limit:
                    session.close_reason = "idle_timeout"
                    self._close_soon(session, CloseCode.IDLE_TIMEOUT, "idle timeout")
                elif wall > session.expires_at:
                    session.close_reason = "token_expired"
                    self._close_soon(session, CloseCode.TOKEN_EXPIRED, "token expired")
            if now - last_refresh >= self.cfg.route_ttl_s / 3:
                last_refresh = now
                try:
                    await self._refresh_routes()
                except Exception as exc:
                    log.warning("route refresh failed: %r", exc)

    async def _connect_kafka(self) -> None:
        from aiokafka import AIOKafkaProducer

        attempt = 0
        while not self.stop.is_set():
            producer = AIOKafkaProducer(
                bootstrap_servers=self.cfg.kafka_bootstrap,
                client_id=self.cfg.node_id,
                acks="all",
                enable_idempotence=True,
                linger_ms=self.cfg.kafka_linger_ms,
                max_batch_size=256 * 1024,
                partitioner=_CachedPartitioner(),
                request_timeout_ms=10000,
            )
            try:
                await producer.start()
            except Exception as exc:
                log.warning("kafka not reachable yet: %r", exc)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            self.producer = producer
            self.kafka_ok = True
            return

    async def _connect_cassandra(self) -> None:
        attempt = 0
        while not self.stop.is_set() and not self.store.ready:
            try:
                await in_daemon_thread(self.store.connect)
            except Exception as exc:
                log.warning("cassandra not reachable yet: %r", exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    async def start_backends(self) -> None:
        self.redis = redis_client.connect(
            self.cfg.redis_url, cluster=self.cfg.redis_cluster, max_connections=64, timeout_s=5
        )
        self._max_receipt = self.redis.register_script(state.MAX_RECEIPT)
        self._spawn(self._connect_cassandra())
        await self._connect_kafka()
        if self.stop.is_set():
            return
        for loop in (self._pubsub_loop(), self._health_loop(), self._sweep_loop()):
            self._spawn(loop)
        log.info("backends connected")

    # Drain and shutdown ----------------------------------------------------------------------

    def begin_drain(self) -> None:
        if self.draining:
            return
        log.info(
            "SIGTERM: draining %d sessions over %.1fs", len(self.sessions), self.cfg.drain_window_s
        )
        self.draining = True
        self.metrics.draining.set(1)
        self._spawn(self._drain())

    async def _drain(self) -> None:
        window = self.cfg.drain_window_s
        started = time.monotonic()
        sessions = list(self.sessions)
        random.shuffle(sessions)
        for session, offset in zip(sessions, drain_schedule(len(sessions), window), strict=True):
            delay = started + offset - time.monotonic()
            if delay > 0.02:
                await asyncio.sleep(delay)
            if session.close_reason is not None or session not in self.sessions:
                continue
            frame = {
                "op": "reconnect",
                "reason": "draining",
                "retry_after_ms": random.randint(0, 1000),
            }
            self.push(session, encode(frame), "reconnect")
            session.close_reason = "drain"
            self._close_soon(session, CloseCode.RECONNECT, "reconnect elsewhere")
        deadline = started + window
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.stop.set()

    async def shutdown(self) -> None:
        for session in list(self.sessions):
            session.close_reason = session.close_reason or "shutdown"
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.producer.stop(), 2)
        for task in list(self._tasks):
            task.cancel()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.redis.aclose(), 1)
        await close_store(self.store)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.begin_drain)
        loop.add_signal_handler(signal.SIGINT, self.begin_drain)
        server = await serve(
            self.handler,
            self.cfg.listen_host,
            self.cfg.listen_port,
            process_request=self.process_request,
            max_size=self.cfg.max_frame_bytes,
            max_queue=4,
            write_limit=WRITE_LIMIT,
            compression=None,  # per-message deflate costs ~100 KiB per connection
            ping_interval=None,  # application-level heartbeat, see docs/protocol.md
            close_timeout=CLOSE_TIMEOUT_S,
            open_timeout=10,
            backlog=4096,
        )
        log.info("listening on %s:%s", self.cfg.listen_host, self.cfg.listen_port)
        starter = asyncio.ensure_future(self.start_backends())
        await self.stop.wait()
        starter.cancel()
        server.close(close_connections=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT_S + 0.5)
        await self.shutdown()
        log.info("drained, exiting")
        return 0


def from_recent_cache(entries: list[str], cursor: int, limit: int) -> list[tuple[int, str]] | None:
    """Messages after ``cursor`` from the recent cache ('<seq>|<json>' entries, replays may
    repeat), or None when the cache cannot prove it holds every seq from cursor + 1 on.

    Anything newer than the cache's last entry is not routed yet, so it still arrives live.
    """
    by_seq: dict[int, str] = {}
    for entry in entries:
        seq_text, view = entry.split("|", 1)
        by_seq[int(seq_text)] = view
    if not by_seq or min(by_seq) > cursor + 1:
        return None
    wanted = sorted(s for s in by_seq if s > cursor)
    if any(b - a != 1 for a, b in itertools.pairwise(wanted)):
        return None
    return [(s, by_seq[s]) for s in wanted[:limit]]


class _CachedPartitioner:
    """aiokafka's default key partitioning (murmur2, as the Java client), memoised per key:
    its pure-Python murmur2 cost more than the rest of a produce call."""

    def __init__(self, size: int = 100_000) -> None:
        from aiokafka.partitioner import DefaultPartitioner, murmur2

        self._default = DefaultPartitioner()
        self._murmur2 = murmur2
        self._hash: dict[bytes, int] = {}
        self._size = size

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        hashed = self._hash.get(key)
        if hashed is None:
            if len(self._hash) >= self._size:
                self._hash.clear()
            hashed = self._hash[key] = self._murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


def _bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


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


def _closed_reason(ws: ServerConnection) -> str:
    received = ws.protocol.close_rcvd
    if received is not None and received.code == CloseCode.MESSAGE_TOO_BIG:
        return "frame_too_big"
    sent = ws.protocol.close_sent
    if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
        return "frame_too_big"
    if received is None and sent is None:
        return "connection_lost"
    return "client_close"


def main() -> None:
    config = load_or_exit("gateway")
    setup_logging(config.log_level, config.node_id)
    try:
        verifier = TokenVerifier.from_files(
            hs256_secret_file=config.jwt_hs256_secret_file,
            jwks_file=config.jwt_jwks_file,
            issuer=config.jwt_issuer,
            audience=config.jwt_audience,
            leeway_s=config.jwt_leeway_s,
        )
    except (ValueError, OSError) as exc:
        print(f"gateway: invalid configuration:\n  IMGW_JWT_*: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(asyncio.run(Gateway(config, verifier).run()))


if __name__ == "__main__":
    main()
