"""Dispatcher/persister: consume accepted messages from Kafka, assign per-conversation seqs,
write them to Cassandra, refresh the Redis caches and route them to the recipients' gateways.

Run: ``python -m gateway.dispatcher``. At-least-once: offsets are committed only after a batch
is persisted and routed, and every step is idempotent (seq assignment is keyed by message id,
Cassandra writes are upserts, gateways drop seqs a device already has).
"""

# Heavy client libraries are imported where first used, so the process listens fast.

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from gateway import redis_client, state
from gateway.config import Config, load_or_exit
from gateway.groups import group_members
from gateway.metrics import DispatcherMetrics
from gateway.protocol import dm_members, encode, message_frame
from gateway.runtime import backoff, http_route, in_daemon_thread, request_path, setup_logging
from gateway.store import CassandraStore, MessageRecord, close_store

log = logging.getLogger("gateway.dispatcher")

ASSIGNED_TTL_S = 3600  # covers redelivery of uncommitted records and gateway re-produces
INIT_RECENT_IDS = 2000  # message ids reloaded per conversation when Redis lost the counter


class BadRecord(ValueError):
    pass


@dataclass(slots=True)
class Accepted:
    """One record of the messages topic (schema v1, written by the gateway)."""

    message_id: str
    conversation_id: str
    kind: str
    sender: str
    device: str
    client_msg_id: str
    to: str | None
    group_id: str | None
    body: str
    accepted_at: int


def parse_record(value: bytes) -> Accepted:
    """Decode a messages-topic record; BadRecord for anything that is not schema v1."""
    try:
        data = json.loads(value)
        if data.get("v") != 1:
            raise BadRecord(f"unsupported schema version {data.get('v')!r}")
        kind = data["kind"]
        if kind not in ("dm", "group"):
            raise BadRecord(f"unknown kind {kind!r}")
        record = Accepted(
            message_id=str(data["mid"]),
            conversation_id=str(data["conv"]),
            kind=kind,
            sender=str(data["from"]),
            device=str(data["dev"]),
            client_msg_id=str(data["cmid"]),
            to=data.get("to"),
            group_id=data.get("gid"),
            body=str(data["body"]),
            accepted_at=int(data["ts"]),
        )
    except BadRecord:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadRecord(f"undecodable record: {exc!r}") from None
    if kind == "dm" and dm_members(record.conversation_id) is None:
        raise BadRecord(f"dm record with conversation {record.conversation_id!r}")
    if kind == "group" and not record.group_id:
        raise BadRecord("group record without gid")
    return record


class _SeenCache:
    """Bounded insertion-ordered set: skips rewriting index rows we wrote recently."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[Any, None] = OrderedDict()
        self._size = size

    def __contains__(self, item: Any) -> bool:
        return item in self._items

    def add(self, item: Any) -> None:
        self._items[item] = None
        if len(self._items) > self._size:
            self._items.popitem(last=False)

    def discard_all(self) -> None:
        self._items.clear()


class Dispatcher:
    def __init__(self, config: Config) -> None:
        self.cfg = config
        self.metrics = DispatcherMetrics()
        self.store = CassandraStore(
            config.host_ports("cassandra_hosts"),
            config.cassandra_keyspace,
            config.cassandra_bucket_s,
        )
        self.redis: Any = None
        self.consumer: Any = None
        self.dlq: Any = None
        self.stopping = asyncio.Event()
        self.kafka_ok = False
        self.redis_ok = False
        self._assign: Any = None
        self._buckets_written = _SeenCache(100_000)
        self._index_written = _SeenCache(200_000)
        self.stage = "idle"  # the batch step in progress, for the failure metric
        self._last_seq: OrderedDict[str, int] = OrderedDict()  # highest seq we assigned

    # Readiness ---------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if self.stopping.is_set():
            return False, "stopping"
        if not self.kafka_ok:
            return False, "kafka unavailable"
        if not self.redis_ok:
            return False, "redis unavailable"
        if not self.store.ready:
            return False, "cassandra unavailable"
        return True, "ready"

    def process_request(self, connection: ServerConnection, request: Request) -> Response:
        path = request_path(request)
        response = http_route(connection, path, ready=self.readiness, render_metrics=self._render)
        return response or connection.respond(404, "not found\n")

    def _render(self) -> bytes:
        self.metrics.ready.set(1 if self.readiness()[0] else 0)
        return self.metrics.render()

    # Lifecycle -----------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop)
        async with serve(
            _no_websocket,
            self.cfg.listen_host,
            self.cfg.listen_port,
            process_request=self.process_request,
            ping_interval=None,
        ):
            log.info("listening on %s:%s", self.cfg.listen_host, self.cfg.listen_port)
            await self._connect()
            health = asyncio.create_task(self._health_loop())
            try:
                await self._consume_loop()
            finally:
                health.cancel()
                await self._shutdown()
        log.info("stopped")
        return 0

    def _on_stop(self) -> None:
        log.info("stop requested: finishing the current batch")
        self.metrics.draining.set(1)
        self.stopping.set()

    async def _connect(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        self.redis = redis_client.connect(
            self.cfg.redis_url, cluster=self.cfg.redis_cluster, max_connections=16, timeout_s=5
        )
        self._assign = self.redis.register_script(state.ASSIGN_SEQS)
        attempt = 0
        while not self.stopping.is_set() and not self.store.ready:
            try:
                await in_daemon_thread(self.store.connect)
            except Exception as exc:
                log.warning("cassandra not reachable yet: %s", exc)
                await self._sleep(backoff(attempt))
                attempt += 1
        attempt = 0
        while not self.stopping.is_set() and self.consumer is None:
            consumer = AIOKafkaConsumer(
                self.cfg.kafka_topic,
                bootstrap_servers=self.cfg.kafka_bootstrap,
                group_id=self.cfg.kafka_consumer_group,
                client_id=self.cfg.node_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # Short on purpose: 200 ms saved idle CPU but, under load, made the smoke load
                # test miss live deliveries (docs/benchmarks.md, session 2).
                fetch_max_wait_ms=10,
                max_poll_records=1000,
                session_timeout_ms=10000,
                heartbeat_interval_ms=2000,
                max_poll_interval_ms=300000,
            )
            dlq = AIOKafkaProducer(
                bootstrap_servers=self.cfg.kafka_bootstrap, acks="all", enable_idempotence=True
            )
            try:
                await consumer.start()
                await dlq.start()
            except Exception as exc:
                log.warning("kafka not reachable yet: %s", exc)
                with contextlib.suppress(Exception):
                    await consumer.stop()
                with contextlib.suppress(Exception):
                    await dlq.stop()
                await self._sleep(backoff(attempt))
                attempt += 1
                continue
            self.consumer, self.dlq, self.kafka_ok = consumer, dlq, True
        log.info("connected to cassandra, kafka and redis")

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _health_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.redis.ping(), 2)
                epoch = await self.redis.get(state.PREFIX + "epoch")
                if epoch is None:
                    # Redis lost its data (restart without persistence): forget what we think
                    # we wrote to the caches so the indexes are written again.
                    await self.redis.set(state.PREFIX + "epoch", str(time.time()), nx=True)
                    self._index_written.discard_all()
                self.redis_ok = True
            except Exception:
                self.redis_ok = False
            if self.consumer is not None:
                try:
                    await asyncio.wait_for(self.consumer.topics(), 3)
                    self.kafka_ok = True
                except Exception:
                    self.kafka_ok = False
            await asyncio.sleep(1.0)

    async def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            if self.consumer is not None:
                await asyncio.wait_for(self.consumer.stop(), 5)
        with contextlib.suppress(Exception):
            if self.dlq is not None:
                await asyncio.wait_for(self.dlq.stop(), 3)
        with contextlib.suppress(Exception):
            if self.redis is not None:
                await self.redis.aclose()
        await close_store(self.store)

    # Consume -----------------------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        if self.consumer is None:
            return
        while not self.stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=100, max_records=1000)
            if not batches:
                self._idle_lag()
                continue
            started = time.perf_counter()
            records: list[Any] = [r for part in batches.values() for r in part]
            self.metrics.consumed.inc(len(records))
            self.metrics.batch_size.observe(len(records))
            attempt = 0
            while True:
                try:
                    await self.process(records)
                    break
                except Exception as exc:  # a backend failed: retry the same batch (idempotent)
                    size = len(records)
                    log.warning("batch of %d failed at %s, retrying: %r", size, self.stage, exc)
                    self.metrics.failures.labels(self.stage).inc()
                    if self.stopping.is_set():
                        return  # not committed: another dispatcher redoes it
                    await asyncio.sleep(backoff(attempt))
                    attempt += 1
            await self._commit(batches)
            self.metrics.batch_latency.observe(time.perf_counter() - started)

    def _idle_lag(self) -> None:
        """A poll that fetched nothing means every assigned partition is caught up."""
        if self.consumer is None:
            return
        for tp in self.consumer.assignment():
            self.metrics.consumer_lag.labels(str(tp.partition)).set(0)

    async def _commit(self, batches: dict[Any, list[Any]]) -> None:
        offsets = {tp: part[-1].offset + 1 for tp, part in batches.items()}
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # rebalance: the new owner redoes these records, idempotently
            log.warning("commit failed (records will be redelivered): %r", exc)
        for tp, next_offset in offsets.items():
            high = self.consumer.highwater(tp)
            if high is not None:
                self.metrics.consumer_lag.labels(str(tp.partition)).set(max(0, high - next_offset))

    async def process(self, raw_records: list[Any]) -> None:
        # The stage names label im_dispatcher_batch_failures_total (BATCH_STAGES).
        self.stage = "dead_letter"
        accepted: list[Accepted] = []
        for raw in raw_records:
            try:
                item = parse_record(raw.value)
            except BadRecord as exc:
                await self._dead_letter(raw, str(exc))
                continue
            accepted.append(item)
        if not accepted:
            return
        self.stage = "sequence"
        records = await self._assign_seqs(accepted)
        self.stage = "recipients"
        members = await self._recipients(records)
        index = {(u, r.conversation_id) for r in records for u in members[r.conversation_id]}
        new_index = [p for p in index if p not in self._index_written]
        self.stage = "persist"
        started = time.perf_counter()
        await self._persist(records, new_index)
        self.metrics.persist_latency.observe(time.perf_counter() - started)
        self.metrics.persisted.inc(len(records))
        views = [encode(r.client_view()) for r in records]
        self.stage = "cache"
        await self._cache(records, views, new_index)
        for pair in new_index:
            self._index_written.add(pair)
        self.stage = "route"
        await self._route(records, [message_frame(view) for view in views], members)

    async def _dead_letter(self, raw: Any, why: str) -> None:
        source = f"{raw.topic}/{raw.partition}@{raw.offset}"
        log.error("dead-lettering %s: %s", source, why)
        headers = [("error", why.encode()[:500]), ("source", source.encode())]
        await self.dlq.send_and_wait(
            self.cfg.kafka_topic + ".dlq", value=raw.value, key=raw.key, headers=headers
        )
        self.metrics.dead_lettered.inc()

    async def _assign_seqs(self, items: list[Accepted]) -> list[MessageRecord]:
        now_ms = int(time.time() * 1000)
        bucket_now = self.store.bucket_of(now_ms / 1000)
        assigned: dict[int, tuple[int, int]] = {}
        pending = list(range(len(items)))
        for _round in range(3):
            by_conv: dict[str, list[int]] = {}
            for i in pending:
                by_conv.setdefault(items[i].conversation_id, []).append(i)
            async with self.redis.pipeline(transaction=False) as pipe:
                for conv, indexes in by_conv.items():
                    keys = [state.counter_key(conv)]
                    keys += [state.assigned_key(conv, items[i].message_id) for i in indexes]
                    args = [bucket_now, ASSIGNED_TTL_S]
                    redis_client.queue_script(pipe, self._assign, keys, args)
                per_conv = await pipe.execute()
            outcomes = [
                (i, result)
                for indexes, results in zip(by_conv.values(), per_conv, strict=True)
                for i, result in zip(indexes, results, strict=True)
            ]
            need_init: set[str] = set()
            regressed: set[str] = set()
            retry: list[int] = []
            for i, result in outcomes:
                if result == "INIT":
                    need_init.add(items[i].conversation_id)
                    retry.append(i)
                    continue
                seq, bucket, new = (int(x) for x in str(result).split(":"))
                conv = items[i].conversation_id
                if new and seq <= self._last_seq.get(conv, 0):
                    # The counter went backwards (Redis restored an older state): never hand
                    # out a seq twice. Rebuild it and assign again.
                    regressed.add(conv)
                    retry.append(i)
                    continue
                if not new:
                    self.metrics.duplicates.inc()
                assigned[i] = (seq, bucket)
                self._last_seq[conv] = max(seq, self._last_seq.get(conv, 0))
                self._last_seq.move_to_end(conv)
            while len(self._last_seq) > 100_000:
                self._last_seq.popitem(last=False)
            if not retry:
                break
            for conv in need_init:
                await self._init_counter(conv, bucket_now)
            for conv in regressed:
                await self._repair_counter(conv, [items[i] for i in retry])
            pending = retry
        else:
            raise RuntimeError("sequence counters could not be initialised")
        return [
            MessageRecord(
                conversation_id=it.conversation_id,
                bucket=assigned[i][1],
                seq=assigned[i][0],
                message_id=it.message_id,
                sender=it.sender,
                sender_device=it.device,
                client_msg_id=it.client_msg_id,
                kind=it.kind,
                recipient=it.to,
                group_id=it.group_id,
                body=it.body,
                accepted_at=it.accepted_at,
                persisted_at=now_ms,
            )
            for i, it in enumerate(items)
        ]

    async def _repair_counter(self, conversation_id: str, items: list[Accepted]) -> None:
        recent = await self.store.recent_ids(conversation_id, 1)
        floor = max(self._last_seq.get(conversation_id, 0), recent[0][0] if recent else 0)
        log.warning("seq counter of %s went backwards; resetting it to %d", conversation_id, floor)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(state.counter_key(conversation_id), "seq", floor)
            for item in items:
                if item.conversation_id == conversation_id:
                    pipe.delete(state.assigned_key(conversation_id, item.message_id))
            await pipe.execute()

    async def _init_counter(self, conversation_id: str, bucket_now: int) -> None:
        """Rebuild a lost counter from Cassandra (last seq, bucket, recent message ids)."""
        recent = await self.store.recent_ids(conversation_id, INIT_RECENT_IDS)
        last_seq = recent[0][0] if recent else 0
        bucket = recent[0][1] if recent else bucket_now
        log.info("initialising seq counter of %s at %d", conversation_id, last_seq)
        async with self.redis.pipeline(transaction=False) as pipe:
            for seq, seq_bucket, mid in recent:
                pipe.set(
                    state.assigned_key(conversation_id, mid),
                    f"{seq}:{seq_bucket}",
                    nx=True,
                    ex=ASSIGNED_TTL_S,
                )
            key = state.counter_key(conversation_id)
            pipe.hsetnx(key, "seq", last_seq)
            pipe.hsetnx(key, "bucket", bucket)
            await pipe.execute()

    async def _recipients(self, records: list[MessageRecord]) -> dict[str, list[str]]:
        """Conversation id -> member user ids (the sender's own devices included)."""
        out: dict[str, list[str]] = {}
        groups = {r.group_id for r in records if r.kind == "group" and r.group_id}
        for r in records:
            pair = dm_members(r.conversation_id)
            if pair is not None:
                out[r.conversation_id] = list(dict.fromkeys(pair))
        for gid in groups:
            out[f"g:{gid}"] = await group_members(self.redis, self.store, gid)
        return out

    async def _persist(
        self, records: list[MessageRecord], new_index: list[tuple[str, str]]
    ) -> None:
        buckets = {(r.conversation_id, r.bucket) for r in records}
        new_buckets = [b for b in buckets if b not in self._buckets_written]
        await asyncio.gather(
            self.store.insert_messages(records),
            self.store.add_buckets(new_buckets),
            self.store.add_user_conversations(new_index),
        )
        for b in new_buckets:
            self._buckets_written.add(b)

    async def _cache(
        self, records: list[MessageRecord], views: list[str], new_index: list[tuple[str, str]]
    ) -> None:
        """Append to the recent caches (one RPUSH per conversation) and add conversations to
        the users' index sets. Pairs indexed since the last Redis data loss are skipped: the
        sets are rebuilt from Cassandra when they lack their COMPLETE marker."""
        size = self.cfg.recent_cache_size
        async with self.redis.pipeline(transaction=False) as pipe:
            if size:
                entries: dict[str, list[str]] = defaultdict(list)
                for record, view in zip(records, views, strict=True):
                    entries[record.conversation_id].append(state.encode_recent(record.seq, view))
                for conv, values in entries.items():
                    key = state.recent_key(conv)
                    pipe.rpush(key, *values)
                    pipe.ltrim(key, -size, -1)
                    pipe.expire(key, 7 * 86400)
            for user, conv in new_index:
                pipe.sadd(state.user_conversations_key(user), conv)
            await pipe.execute()

    async def _route(
        self, records: list[MessageRecord], frames: list[str], members: dict[str, list[str]]
    ) -> None:
        users = list({u for conv in {r.conversation_id for r in records} for u in members[conv]})
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.zrangebyscore(state.route_key(user), now, "+inf")
            nodes_per_user = await pipe.execute()
        user_nodes = dict(zip(users, nodes_per_user, strict=True))
        per_node: dict[str, list[state.DeliveryItem]] = defaultdict(list)
        for record, frame in zip(records, frames, strict=True):
            by_node: dict[str, list[str]] = defaultdict(list)
            for user in members[record.conversation_id]:
                nodes = user_nodes.get(user) or []
                if not nodes:
                    self.metrics.offline.inc()
                for node in nodes:
                    by_node[node].append(user)
            for node, node_users in by_node.items():
                per_node[node].append(
                    state.DeliveryItem(
                        node_users, record.conversation_id, record.seq, record.accepted_at, frame
                    )
                )
        if not per_node:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for node, items in per_node.items():
                pipe.spublish(state.node_channel(node), state.encode_delivery(items))
                self.metrics.routed.inc(sum(len(item.users) for item in items))
            await pipe.execute()


async def _no_websocket(connection: ServerConnection) -> None:
    await connection.close(1008, "the dispatcher serves only /healthz, /readyz and /metrics")


def main() -> None:
    config = load_or_exit("dispatcher")
    setup_logging(config.log_level, config.node_id)
    raise SystemExit(asyncio.run(Dispatcher(config).run()))


if __name__ == "__main__":
    main()
