"""Dispatcher/persister: consume accepted messages from Kafka, assign per-conversation seqs,
write them to Cassandra, refresh the Redis caches and route them to the recipients' gateways.

Run: ``python -m gateway.dispatcher``. At-least-once: offsets are committed only after a batch
is persisted and routed, and every step is idempotent (a message's seq is looked up in the
durable ``message_seqs`` table before a new one is assigned, Cassandra writes are upserts,
gateways drop seqs a device already has).

Seqs come from blocks reserved under a fence (gateway.sequencer, docs/multi-region.md section
5), never from Redis. The races this module closes, and how:

* **Zombie** (this process frozen while the group gave its partitions to another member): the
  fence refuses its next reservation; and no write is *issued* unless a Kafka heartbeat
  succeeded within ``LEASE_S`` (less than the session timeout), so a process that wakes up after
  being frozen longer than that drops its batch instead of writing seqs from its old block.
  What the check cannot stop: writes issued just before a freeze go out when the process
  wakes. They land inside the range the new owner announced as in doubt, which that owner
  shadowed with newer tombstones (gateway.sequencer), so they stay invisible; and after its
  writes this process checks the lease again before caching or routing them.
* **Handover** (rebalance, shutdown): the revoke callback waits for the batch in progress, then
  writes one release marker per partition, only for partitions whose writes all completed; the
  next owner continues without a gap. A batch started after the revoke is dropped unprocessed
  (its offsets were not committed, the next owner redoes it).
* **Redelivery, MirrorMaker duplicates, late resends**: the ``message_seqs`` lookup (and an
  in-process cache of what this process assigned) returns the first seq; a retried batch
  reuses the seqs of its first attempt even if that attempt's write timed out but landed.

Poison records (a record that fails every time, e.g. a group record whose conversation is not
``g:<gid>``, a ``ts`` beyond bigint, a lone surrogate) must not stall the batch, nor an outage
dead-letter everything (``_settle``):

* A failure is an **outage** when it is a timeout or a connection error (``is_transient``) or a
  probe of Redis and Cassandra fails right after it: the same records are retried with backoff,
  forever, and never counted against them.
* Any other failure is **deterministic**. A batch that fails so ``SPLIT_AFTER`` times is split in
  halves, processed in order (Kafka order within every conversation holds), down to single
  records; a single record that fails so ``MAX_RECORD_ATTEMPTS`` times is **poison**: it goes to
  ``<topic>.dlq`` with the reason, the stage and the error in its headers
  (``im_dispatcher_dead_lettered_total{reason="poison"}``), and the batch's offsets are committed
  past it. A seq it was given but that never became durable is recorded and announced as an
  in-doubt range (a ``gap``), so clients do not wait for it.
* More than ``MAX_POISON_STREAK`` poison records in a row without one success in between look
  like a bug of this dispatcher, not bad data: it stops dead-lettering and retries (the
  ImDispatcherNotCommitting alert pages).
"""

# Heavy client libraries are imported where first used, so the process listens fast.

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import signal
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from typing import Any

from gateway import fanout, state
from gateway.config import Config, load_or_exit
from gateway.homes import shard_of
from gateway.metrics import DispatcherMetrics
from gateway.protocol import encode, message_frame
from gateway.records import Accepted, BadRecord, parse_record
from gateway.runtime import backoff, in_daemon_thread, setup_logging
from gateway.sequencer import Fenced, Gap, NotOwner, Sequencer
from gateway.shardmap import MAP_LEASE_S, REFRESH_S, ControlStore, Decision, ShardMap, decide
from gateway.store import MESSAGE_COLUMNS, MessageRecord, close_store
from gateway.worker import KafkaWorker

log = logging.getLogger("gateway.dispatcher")

SESSION_TIMEOUT_MS = 10000
HEARTBEAT_INTERVAL_MS = 2000
# A write is issued only within this long of the last successful heartbeat. The group coordinator
# evicts a member SESSION_TIMEOUT_MS after the last heartbeat it received (which is before the
# answer we saw), so while this holds nobody else owns our partitions.
LEASE_S = (SESSION_TIMEOUT_MS - 3000) / 1000
ASSIGNED_CACHE = 200_000  # message id -> (seq, bucket) this process assigned (redelivery)
# Poison records (see the module docstring): deterministic failures of a multi-record chunk
# before it is split in halves; of one record alone before it is dead-lettered; and poison
# records in a row (no success between them) after which nothing more is dead-lettered.
SPLIT_AFTER = 2
MAX_RECORD_ATTEMPTS = 5
MAX_POISON_STREAK = 20
PROBE_TIMEOUT_S = 2.0  # the Redis and Cassandra probe that tells an outage from poison
DLQ_SUFFIX = ".dlq"
LAG_REFRESH_S = 2.0  # how often the lag gauge is recomputed from the partitions' end offsets
LAG_READ_TIMEOUT_S = 3.0  # an end-offset read slower than this leaves the lag unknown
# Exception class names (anywhere in the class's MRO) of cassandra-driver and redis-py that mean
# "the backend is unreachable or overloaded", not "this record is bad". aiokafka's errors say so
# themselves (``retriable``).
TRANSIENT_ERRORS = frozenset(
    {
        *("NoHostAvailable", "OperationTimedOut", "Unavailable", "ReadTimeout", "WriteTimeout"),
        *("OverloadedErrorMessage", "IsBootstrappingErrorMessage", "ConnectionException"),
        *("ConnectionError", "TimeoutError", "BusyLoadingError", "ClusterDownError"),
        *("TryAgainError", "MasterDownError", "ReadOnlyError", "MaxConnectionsError"),
        "OutOfMemoryError",
    }
)
# Redis error replies that say the server cannot take writes now (older redis-py raises a plain
# ResponseError for them).
TRANSIENT_REPLIES = ("OOM ", "LOADING ", "READONLY ", "MASTERDOWN ", "CLUSTERDOWN ", "TRYAGAIN ")


def is_transient(exc: BaseException) -> bool:
    """Whether a failure says a backend is down or slow (retry the same records, forever)
    rather than that something in the records is wrong."""
    if isinstance(exc, TimeoutError | ConnectionError | OSError):
        return True
    if getattr(exc, "retriable", False):
        return True
    if type(exc).__name__ == "ResponseError" and str(exc).startswith(TRANSIENT_REPLIES):
        return True
    return any(cls.__name__ in TRANSIENT_ERRORS for cls in type(exc).__mro__)


class _Dropped(Exception):
    """The batch must end uncommitted (``dropped``: what _run_batch returns)."""

    def __init__(self, dropped: bool) -> None:
        super().__init__("batch dropped")
        self.dropped = dropped


class LeaseLost(Exception):
    """No successful heartbeat for LEASE_S (our partitions may belong to someone else), or no
    shard map read for MAP_LEASE_S (our shards may have moved)."""


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


class Dispatcher(KafkaWorker):
    name = "dispatcher"
    metrics: DispatcherMetrics

    def __init__(self, config: Config) -> None:
        super().__init__(config, DispatcherMetrics())
        self.dlq: Any = None
        self.kafka_ok = False
        self.redis_ok = False
        self._assign: Any = None
        self._buckets_written = _SeenCache(100_000)
        self._index_written = _SeenCache(200_000)
        self.sequencer = Sequencer(self.store, config.region, on_refusal=self._refused)
        self.metrics.info.labels(config.region, config.consumer_group).set(1)
        # message id -> (seq, bucket) assigned by this process; filled before the write, so a
        # retried batch gets the same seqs even when its first write timed out but landed.
        self._assigned: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._batch_lock = asyncio.Lock()  # one batch, or one revoke, at a time
        self._revoking = False
        self._owned: set[Any] = set()  # TopicPartitions of the current assignment
        self._committed: dict[Any, int] = {}  # TopicPartition -> next offset to process
        self._lag_labels: set[str] = set()  # the consumer_lag series this process exports
        self._generation: int | None = None
        self._kafka: Any = None  # the consumer, from before its start() on
        self._heartbeat_ok_at = 0.0  # monotonic time of the last successful heartbeat
        # Partitions whose last write was issued and not confirmed: no release marker for them
        # (the write may still land after the next owner continued at "last durable + 1").
        self._unconfirmed: set[int | str] = set()
        self._batch_owners: set[int | str] = set()
        # The batch in progress: records already dead-lettered (topic, partition, offset), so a
        # retried or split chunk does not dead-letter them twice; poison records in a row.
        self._dead_lettered: set[tuple[str, int, int]] = set()
        self._poison_streak = 0
        # The shard map (gateway.shardmap): read at SERIAL every REFRESH_S; no write is issued
        # with a map older than MAP_LEASE_S.
        self.control: ControlStore | None = None
        self.map: ShardMap | None = None
        self._map_ok_at = 0.0
        self._member = ""  # 'm<hash of the Kafka member id>': the writer owner with peers
        self.topics = [config.kafka_topic, *(f"{p}.{config.kafka_topic}" for p in config.peers)]
        self.deliveries: Any = None  # producer of the deliveries topic (only with peers)

    def _refused(self, conversation_id: str) -> None:
        log.warning("fencing refusal: no longer sequencing %s", conversation_id)
        self.metrics.fencing_refusals.inc()

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
        if self.map is None:
            return False, "no shard map yet"
        return True, "ready"

    # Lifecycle -----------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop)
        async with self.serve():
            log.info("listening on %s:%s", self.cfg.listen_host, self.cfg.listen_port)
            await self._connect()
            health = asyncio.create_task(self._health_loop())
            refresh = asyncio.create_task(self._map_loop())
            lag = asyncio.create_task(self._lag_loop())
            try:
                await self._consume_loop()
            finally:
                health.cancel()
                refresh.cancel()
                lag.cancel()
                await self._shutdown()
        log.info("stopped")
        return 0

    def _on_stop(self) -> None:
        log.info("stop requested: finishing the current batch")
        self.metrics.draining.set(1)
        self.stopping.set()

    async def _connect(self) -> None:
        await self.connect_redis_and_store()
        await self._retry(
            self._refresh_map,
            until=lambda: self.map is not None,
            failure="shard map not readable yet",
        )
        started = await self.start_kafka(self._kafka_clients, self._start_kafka)
        if started is not None:
            self.consumer, self.dlq = started
            self.kafka_ok = True
        log.info("connected to cassandra, kafka and redis")

    def _kafka_clients(self) -> tuple[Any, Any]:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        consumer = AIOKafkaConsumer(
            **self.cfg.kafka_kwargs(),
            group_id=self.cfg.consumer_group,
            client_id=self.cfg.node_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Short on purpose: 200 ms saved idle CPU but, under load, made the smoke load
            # test miss live deliveries (docs/benchmarks.md, session 2).
            fetch_max_wait_ms=10,
            max_poll_records=1000,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms=300000,
            # With mirrored topics: partition p of every topic goes to one member, so a
            # conversation (same key, same partition count) reaches one member only.
            partition_assignment_strategy=_assignors(bool(self.cfg.peers)),
            metadata_max_age_ms=30000,  # a mirrored topic created later is seen soon
        )
        dlq = AIOKafkaProducer(**self.cfg.kafka_kwargs(), acks="all", enable_idempotence=True)
        # The listener may run during start() already, before self.consumer is set.
        self._kafka = consumer
        consumer.subscribe(self.topics, listener=_rebalance_listener(self))
        return consumer, dlq

    async def _start_kafka(self, consumer: Any, dlq: Any) -> None:
        await consumer.start()
        self._watch_heartbeats(consumer)
        await dlq.start()
        if self.cfg.peers:
            self.deliveries = dlq  # the same idempotent producer, acks=all

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

    # The shard map ---------------------------------------------------------------------------

    async def _map_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self._refresh_map()
            except Exception as exc:
                log.warning("shard map refresh failed: %r", exc)

    async def _refresh_map(self, *, locked: bool = False) -> None:
        """Read the map (SERIAL); apply a newer one between batches (``locked``: the caller
        holds the batch lock), then report the applied epoch. Only then does the map lease
        move on: a dispatcher that reported epoch E has no batch under an older map running."""
        if self.control is None:
            self.control = ControlStore(self.store.session, self.cfg.cassandra_control_keyspace)
            await self.control.ensure(self.cfg.region_list)
        fresh = await self.control.read()
        if fresh is None:
            fresh = await self.control.ensure(self.cfg.region_list)
        if self.map is None or fresh.epoch != self.map.epoch:
            if locked:
                self._apply_map(fresh)
            else:
                async with self._batch_lock:
                    self._apply_map(fresh)
        await self.control.report_epoch(self.cfg.region, self.cfg.node_id, fresh.epoch)
        self._map_ok_at = time.monotonic()

    def _apply_map(self, fresh: ShardMap) -> None:
        if self.map is not None and fresh.epoch < self.map.epoch:
            return  # never go back
        if self.map is not None:
            log.info("shard map epoch %d -> %d", self.map.epoch, fresh.epoch)
        self.map = fresh
        self.metrics.map_epoch.set(fresh.epoch)

    def _watch_heartbeats(self, consumer: Any) -> None:
        """Record when a heartbeat last succeeded (the lease of every write).

        aiokafka 0.14 exposes neither the heartbeat time nor the generation publicly; both are
        read from its group coordinator (``_coordinator``: ``_do_heartbeat``, ``generation``).
        tests/gateway/test_fencing_unit.py fails if a new aiokafka drops them.
        """
        coordinator = consumer._coordinator
        beat = coordinator._do_heartbeat

        async def heartbeat() -> bool:
            ok = bool(await beat())
            if ok:
                self._heartbeat_ok_at = time.monotonic()
            return ok

        coordinator._do_heartbeat = heartbeat

    def _check_lease(self) -> None:
        """Raise unless a write issued now is still ours to make (synchronous on purpose: no
        await may come between this check and issuing the write)."""
        if self._revoking or self._generation is None:
            raise NotOwner("partitions are being revoked")
        now = time.monotonic()
        if now - self._heartbeat_ok_at > LEASE_S:
            raise LeaseLost(f"no successful heartbeat for {LEASE_S:.0f}s")
        if now - self._map_ok_at > MAP_LEASE_S:
            raise LeaseLost(f"no shard map read for {MAP_LEASE_S:.0f}s")

    async def on_assigned(self, assigned: set[Any]) -> None:
        generation = int(self._kafka._coordinator.generation)
        self._generation = generation
        member = str(self._kafka._coordinator.member_id)
        self._member = "m" + hashlib.blake2b(member.encode(), digest_size=6).hexdigest()
        self._owned = set(assigned)
        self._committed.clear()  # another member may have committed meanwhile: read again
        self._heartbeat_ok_at = time.monotonic()  # the join/sync just succeeded
        self.sequencer.assigned(generation)
        self._assigned.clear()
        self._unconfirmed.clear()  # per generation: the old tokens get no markers any more
        log.info(
            "generation %d: partitions %s", generation, sorted(tp.partition for tp in assigned)
        )

    async def on_revoked(self, revoked: set[Any]) -> None:
        # Called by aiokafka's coordinator task before it rejoins; it may interrupt a batch in
        # progress between two awaits. _revoking makes that batch stop at its next step; the
        # lock waits for it, so the markers below follow every write of this generation.
        self._revoking = True
        try:
            async with self._batch_lock:
                await self._release(revoked)
                self.sequencer.revoked()
                self._generation = None
                self._owned = set()
        finally:
            self._revoking = False

    async def _release(self, partitions: Iterable[Any]) -> None:
        """Release markers for ``partitions`` (call with the batch lock held)."""
        generation = self._generation
        if generation is None or not self.store.ready:
            return
        owners = dict.fromkeys(self._owner_of(tp.partition) for tp in partitions)
        writers = [
            self.sequencer.writer(owner).token for owner in owners if owner not in self._unconfirmed
        ]
        try:
            await asyncio.wait_for(self.store.release(writers), 5)
        except Exception as exc:  # the next owner then starts above the ceilings: a gap
            log.warning("release markers not written (%r): the next owner reports gaps", exc)
        else:
            log.info("released %s", writers)

    def _owner_of(self, partition: int) -> int | str:
        """The writer token's owner: the partition on a one-region stack (as in the first
        slice), this group member when mirrored topics are consumed too."""
        return self._member if self.cfg.peers else partition

    async def _shutdown(self) -> None:
        if self.consumer is not None and self._owned:
            # A graceful stop is a handover too: aiokafka calls no revoke callback on stop().
            async with self._batch_lock:
                await self._release(self._owned)
                self.sequencer.revoked()
                self._generation = None
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
            if not batches:  # caught up, or Kafka unreachable: the lag loop tells which
                continue
            started = time.perf_counter()
            records: list[Any] = [r for part in batches.values() for r in part]
            self.metrics.consumed.inc(len(records))
            self.metrics.batch_size.observe(len(records))
            async with self._batch_lock:
                if await self._run_batch(batches, records):
                    await self._commit(batches)
                    self.metrics.batch_latency.observe(time.perf_counter() - started)

    async def _run_batch(self, batches: dict[Any, list[Any]], records: list[Any]) -> bool:
        """Process one batch: outages are retried, poison records dead-lettered (``_settle``);
        False when it must be dropped uncommitted (partitions revoked, lease lost, fenced,
        stopping: their next owner redoes it)."""
        self._dead_lettered.clear()
        self._poison_streak = 0
        try:
            await self._settle(batches, records)
        except _Dropped as dropped:
            return dropped.dropped
        return True

    async def _settle(self, batches: dict[Any, list[Any]], chunk: list[Any]) -> None:
        """Process ``chunk`` (records in Kafka order) until every record is persisted and routed,
        held, skipped or dead-lettered; raises _Dropped when the batch must end uncommitted.
        Outages are retried forever; deterministic failures split the chunk, and a single
        record that keeps failing is dead-lettered (the module docstring)."""
        failures = 0  # deterministic ones, with healthy backends
        retries = 0
        while True:
            if self._revoking or not set(batches) <= self._owned:
                raise _Dropped(await self._drop(batches, "partitions revoked"))
            try:
                await self.process(chunk)
            except (NotOwner, LeaseLost, Fenced) as exc:
                self.metrics.failures.labels("sequence").inc()
                raise _Dropped(await self._ownership_lost(batches, exc)) from None
            except Exception as exc:
                stage = self.stage
                size = len(chunk)
                log.warning("batch of %d failed at %s, retrying: %r", size, stage, exc)
                self.metrics.failures.labels(stage).inc()
                if self.stopping.is_set():
                    raise _Dropped(False) from None  # not committed: another dispatcher redoes it
                if not is_transient(exc) and await self._backends_ok():
                    failures += 1
                    if size > 1 and failures >= SPLIT_AFTER:
                        half = size // 2
                        await self._settle(batches, chunk[:half])
                        await self._settle(batches, chunk[half:])
                        return
                    poison = size == 1 and failures >= MAX_RECORD_ATTEMPTS
                    if poison and await self._poisoned(chunk[0], stage, exc, failures):
                        return
                await asyncio.sleep(backoff(retries))
                retries += 1
            else:
                self._poison_streak = 0
                return

    async def _ownership_lost(self, batches: dict[Any, list[Any]], exc: Exception) -> bool:
        dropped = await self._drop(batches, repr(exc))
        if isinstance(exc, Fenced) and exc.newer_epoch:
            with contextlib.suppress(Exception):
                await self._refresh_map(locked=True)
            return dropped
        # A fenced or lease-less process waits for the group to tell it what it owns.
        await self._sleep(backoff(3))
        return dropped

    async def _backends_ok(self) -> bool:
        """Redis and Cassandra answer a trivial request now (a failure that comes with a failed
        probe is an outage, never poison)."""
        session = self.store.session
        if session is None or not self.kafka_ok:
            return False
        query = "SELECT release_version FROM system.local"
        try:
            await asyncio.wait_for(self.redis.ping(), PROBE_TIMEOUT_S)
            await asyncio.wait_for(
                in_daemon_thread(lambda: session.execute(query, timeout=PROBE_TIMEOUT_S)),
                PROBE_TIMEOUT_S + 1,
            )
        except Exception as exc:
            log.warning("backend probe failed (an outage, not a poison record): %r", exc)
            return False
        return True

    async def _poisoned(self, raw: Any, stage: str, exc: Exception, attempts: int) -> bool:
        """Dead-letter one record that failed ``attempts`` times alone with healthy backends;
        False when it was not (too many in a row, or the DLQ or the gap write failed)."""
        if self._poison_streak >= MAX_POISON_STREAK:
            log.error(
                "%d poison records in a row: not dead-lettering more, retrying (%r)",
                self._poison_streak,
                exc,
            )
            return False
        why = f"{exc!r}"[:400]
        try:
            await self._announce_unused_seq(raw)
            await self._dead_letter(raw, why, reason="poison", stage=stage, attempts=attempts)
        except Exception as failed:
            log.warning("could not dead-letter a poison record yet: %r", failed)
            return False
        self._poison_streak += 1
        return True

    async def _announce_unused_seq(self, raw: Any) -> None:
        """A poison record that got a seq which never became durable leaves a hole: record the
        seq as an in-doubt range (sync reports it) and announce it live, best effort."""
        try:
            item = parse_record(raw.value)
        except BadRecord:
            return
        hit = self._assigned.get(item.message_id)
        if hit is None:
            return
        conv = item.conversation_id
        if await self.store.message_seqs(conv, [item.message_id]):
            return  # durable at its seq: a sync delivers it; nothing is missing
        seq = hit[0]
        gap = Gap(conv, seq, seq)
        await self.store.record_gap(gap, self.sequencer.writer(self._owner_of(raw.partition)).token)
        del self._assigned[item.message_id]  # a replay gets a new seq
        log.warning("seq %d of %s is in doubt (its record is poison)", seq, conv)
        try:
            members = await self._recipients([fanout.gap_record(gap)])
            await fanout.route(self.redis, [], [], members, [gap])
            if self.deliveries is not None:
                await self._publish_deliveries([], [gap])
        except Exception as failed:  # recorded: clients learn it from sync (sync_batch.gaps)
            log.info("gap of poison record not announced live: %r", failed)

    async def _drop(self, batches: dict[Any, list[Any]], why: str) -> bool:
        log.warning("dropping a batch uncommitted (%s); it will be consumed again", why)
        for tp in batches:
            # Still ours: fetch it again from the committed offset. Not ours: the next owner
            # starts there anyway (seek on an unassigned partition raises; nothing to do).
            with contextlib.suppress(Exception):
                await self.consumer.seek_to_committed(tp)
        return False

    # Lag ---------------------------------------------------------------------------------------

    async def _lag_loop(self) -> None:
        while not self.stopping.is_set():
            await self._refresh_lag()
            await asyncio.sleep(LAG_REFRESH_S)

    async def _refresh_lag(self) -> None:
        """consumer_lag per assigned partition: its end offset (read from the leader now) minus
        the next offset to process (the committed one: what is fetched but not yet committed
        is still behind). An empty fetch proves nothing (a broker outage fetches nothing too),
        so when the end offsets cannot be read the lag is unknown: every series this process
        exports reads NaN and lag_known 0, never a reassuring 0."""
        consumer = self.consumer
        if consumer is None:
            return
        partitions = list(consumer.assignment())
        try:
            ends: dict[Any, int] = {}
            if partitions:
                ends = await asyncio.wait_for(consumer.end_offsets(partitions), LAG_READ_TIMEOUT_S)
            for tp in partitions:
                if tp not in self._committed:
                    await self._read_committed(tp)
        except Exception as exc:
            log.info("lag unknown (end offsets not readable): %r", exc)
            self.metrics.lag_known.set(0)
            labels = self._lag_labels | {self._lag_label(tp) for tp in partitions}
            for label in labels:
                self.metrics.consumer_lag.labels(label).set(math.nan)
            self._lag_labels = labels
            return
        labels = set()
        for tp in partitions:
            end, done = ends.get(tp), self._committed.get(tp)
            if end is None or done is None:
                continue
            label = self._lag_label(tp)
            self.metrics.consumer_lag.labels(label).set(max(0, end - done))
            labels.add(label)
        for gone in self._lag_labels - labels:  # moved to another dispatcher, which exports it
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(gone)
        self._lag_labels = labels
        self.metrics.lag_known.set(1)

    async def _read_committed(self, tp: Any) -> None:
        """The group's committed offset of ``tp`` (or, before the first commit, the consumer's
        position: where it starts) into _committed; raises when Kafka cannot tell."""
        committed = await asyncio.wait_for(self.consumer.committed(tp), LAG_READ_TIMEOUT_S)
        if committed is None:
            committed = await asyncio.wait_for(self.consumer.position(tp), LAG_READ_TIMEOUT_S)
        if tp in self.consumer.assignment():
            self._committed[tp] = max(self._committed.get(tp, 0), committed)

    async def _commit(self, batches: dict[Any, list[Any]]) -> None:
        offsets = {tp: part[-1].offset + 1 for tp, part in batches.items()}
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # rebalance: the new owner redoes these records, idempotently
            log.warning("commit failed (records will be redelivered): %r", exc)
        else:
            self.metrics.commits.inc()
            for tp, next_offset in offsets.items():
                self._committed[tp] = max(self._committed.get(tp, 0), next_offset)

    def _lag_label(self, tp: Any) -> str:
        """The partition number for the own topic (as before), '<peer topic>/<p>' otherwise."""
        if tp.topic == self.cfg.kafka_topic:
            return str(tp.partition)
        return f"{tp.topic}/{tp.partition}"

    async def process(self, raw_records: list[Any]) -> None:
        # The stage names label im_dispatcher_batch_failures_total (BATCH_STAGES).
        self.stage = "dead_letter"
        parsed: list[Accepted] = []
        for raw in raw_records:
            try:
                item = parse_record(raw.value)
            except BadRecord as exc:
                await self._dead_letter(raw, str(exc), reason="undecodable", stage="decode")
                continue
            item.partition = raw.partition
            item.owner = self._owner_of(raw.partition)
            item.raw = raw.value
            parsed.append(item)
        if not parsed:
            return
        self.stage = "sequence"
        accepted, held = await self._classify(parsed)
        if held:
            self.stage = "persist"
            await self._hold(held)
        if not accepted:
            return
        self._batch_owners = {it.owner for it in accepted}
        records, gaps = await self._assign_seqs(accepted)
        self.stage = "recipients"
        members = await self._recipients(records)
        index = {(u, r.conversation_id) for r in records for u in members[r.conversation_id]}
        new_index = [p for p in index if p not in self._index_written]
        self.stage = "persist"
        started = time.perf_counter()
        await self._persist(records, new_index)
        self.metrics.persist_latency.observe(time.perf_counter() - started)
        self.metrics.persisted.inc(len(records))
        # Frozen during the writes (they went out when it woke), this process may no longer
        # own them: they are shadowed (Sequencer.prepare), so neither cache nor route them.
        self._check_lease()
        views = [encode(r.client_view()) for r in records]
        self.stage = "cache"
        await self._cache(records, views, new_index)
        for pair in new_index:
            self._index_written.add(pair)
        self.stage = "route"
        frames = [message_frame(view) for view in views]
        await self._route(records, frames, members, gaps)
        if self.deliveries is not None:
            self.stage = "deliveries"
            await self._publish_deliveries(records, gaps)

    async def _classify(self, items: list[Accepted]) -> tuple[list[Accepted], list[Accepted]]:
        """(records to sequence here, records to hold); records homed elsewhere are counted
        and dropped (their home sequences them from its own copy of the topic)."""
        assert self.map is not None
        if any(it.epoch > self.map.epoch for it in items):
            await self._refresh_map(locked=True)  # a gateway saw a newer map than ours
        shard_map, region = self.map, self.cfg.region
        by: dict[Decision, list[Accepted]] = defaultdict(list)
        for it in items:
            by[decide(shard_map, region, shard_of(it.conversation_id), it.epoch)].append(it)
        accepted = by[Decision.SEQUENCE]
        # HOLD, and REFRESH with a map still older than the stamp: hold, never guess.
        held = by[Decision.HOLD] + by[Decision.REFRESH]
        foreign = len(by[Decision.SKIP])
        if foreign:
            self.metrics.foreign_records.inc(foreign)
        seen_or_hold = by[Decision.SEQUENCE_SEEN_OR_HOLD]
        if seen_or_hold:
            found = await self._lookup(seen_or_hold, everywhere=False)
            for it in seen_or_hold:
                (accepted if it.message_id in found else held).append(it)
        checked = by[Decision.SEQUENCE_CHECKED]
        if checked:
            try:
                await self._lookup(checked, everywhere=True)
            except Exception as exc:  # a DC does not answer: cannot tell, so hold
                log.warning("old-stamped records held: not every DC answered (%r)", exc)
                held.extend(checked)
            else:
                accepted.extend(checked)  # found: reused by _assign_seqs; else sequenced
        if len(accepted) != len(items) - foreign - len(held):
            raise AssertionError("a record was neither sequenced, skipped nor held")
        order = {id(it): n for n, it in enumerate(items)}
        accepted.sort(key=lambda it: order[id(it)])  # Kafka order within each conversation
        return accepted, held

    async def _lookup(self, items: list[Accepted], *, everywhere: bool) -> set[str]:
        by_conv: dict[str, list[str]] = defaultdict(list)
        for it in items:
            by_conv[it.conversation_id].append(it.message_id)
        found = await asyncio.gather(
            *(self.store.message_seqs(c, ids, everywhere=everywhere) for c, ids in by_conv.items())
        )
        return {mid for known in found for mid in known}

    async def _hold(self, items: list[Accepted]) -> None:
        """Write held records to the control keyspace (one row per shard and message id, so
        every region holding the same record makes one row) before their offsets commit."""
        assert self.control is not None
        await asyncio.gather(
            *(
                self.control.hold(shard_of(it.conversation_id), it, it.raw, self.cfg.region)
                for it in items
            )
        )
        self.metrics.held_records.inc(len(items))
        log.info("held %d records (no region may sequence them yet)", len(items))

    async def _publish_deliveries(self, records: list[MessageRecord], gaps: list[Gap]) -> None:
        """Every persisted message (and announced gap) to the deliveries topic, for the peers'
        relays (docs/multi-region.md 6); acknowledged before the input offsets commit."""
        topic = self.cfg.kafka_deliveries_topic
        region = self.cfg.region
        futures = []
        for g in gaps:
            value = state.encode_delivery_record(
                "g", region, c=g.conversation_id, lo=g.low, hi=g.high
            )
            key = g.conversation_id.encode()
            futures.append(await self.deliveries.send(topic, value=value, key=key))
        for r in records:
            value = state.encode_delivery_record("m", region, m=_row(r))
            key = r.conversation_id.encode()
            futures.append(await self.deliveries.send(topic, value=value, key=key))
        await asyncio.gather(*futures)

    async def _dead_letter(
        self, raw: Any, why: str, *, reason: str, stage: str, attempts: int = 1
    ) -> None:
        """The record as it was, to ``<topic>.dlq``, with why in its headers (``opsctl dlq``
        reads them): ``error``, ``reason`` (DLQ_REASONS), ``stage``, ``attempts``, ``source``
        (``<topic>/<partition>@<offset>``), ``dispatcher``, and a ``replay-of`` it carried."""
        where = (raw.topic, raw.partition, raw.offset)
        if where in self._dead_lettered:
            return
        source = f"{raw.topic}/{raw.partition}@{raw.offset}"
        log.error("dead-lettering %s (%s at %s): %s", source, reason, stage, why)
        headers = [
            ("error", why.encode("utf-8", "backslashreplace")[:500]),
            ("reason", reason.encode()),
            ("stage", stage.encode()),
            ("attempts", str(attempts).encode()),
            ("source", source.encode()),
            ("dispatcher", self.cfg.node_id.encode()),
        ]
        headers += [(k, v) for k, v in (raw.headers or ()) if k == "replay-of"]
        await self.dlq.send_and_wait(
            self.cfg.kafka_topic + DLQ_SUFFIX, value=raw.value, key=raw.key, headers=headers
        )
        self._dead_lettered.add(where)
        self.metrics.dead_lettered.labels(reason).inc()

    async def _known_seqs(self, items: list[Accepted]) -> dict[str, tuple[int, int]]:
        """message id -> (seq, bucket) of the records that already have a seq: this process's
        cache, else one ``message_seqs`` read per conversation (LOCAL_QUORUM: it sees every
        write a previous owner had acknowledged)."""
        found: dict[str, tuple[int, int]] = {}
        unknown: dict[str, list[str]] = {}
        for it in items:
            hit = self._assigned.get(it.message_id)
            if hit is not None:
                found[it.message_id] = hit
            elif it.message_id not in unknown.setdefault(it.conversation_id, []):
                unknown[it.conversation_id].append(it.message_id)
        convs = [c for c, ids in unknown.items() if ids]
        lookups = await asyncio.gather(*(self.store.message_seqs(c, unknown[c]) for c in convs))
        for known in lookups:
            found.update(known)
        return found

    async def _assign_seqs(self, items: list[Accepted]) -> tuple[list[MessageRecord], list[Gap]]:
        """A seq per record: the one it already has (this process's cache, else the durable
        ``message_seqs``), else new ones from the conversation's reserved block, in Kafka order.
        Returns the records and the in-doubt ranges found while taking conversations over."""
        now_ms = int(time.time() * 1000)
        bucket_now = self.store.bucket_of(now_ms / 1000)
        shard_map = self.map
        assert shard_map is not None
        # Take every conversation over before looking its records up (Sequencer.prepare).
        owners = {it.conversation_id: it.owner for it in items}
        prepared = await asyncio.gather(
            *(
                self.sequencer.prepare(conv, owner, bucket_now, shard_map.entry_of(conv).epoch)
                for conv, owner in owners.items()
            )
        )
        gaps = [gap for gap in prepared if gap is not None]
        found = await self._known_seqs(items)
        for it in items:
            hit = found.get(it.message_id)
            if hit is not None and self.sequencer.is_void(it.conversation_id, hit[0]):
                # An old owner's write that landed after we shadowed its in-doubt range: the
                # row is invisible, so the message gets a new seq (its newer entry wins).
                log.warning(
                    "%s: %s found at shadowed seq %d (a late write): sequenced again",
                    it.conversation_id,
                    it.message_id,
                    hit[0],
                )
                self.metrics.late_writes_shadowed.inc()
                del found[it.message_id]
        duplicates = sum(1 for it in items if it.message_id in found)
        # New messages, per conversation in Kafka order (a record repeated in the batch once).
        fresh: dict[str, list[Accepted]] = {}
        seen: set[str] = set()
        for it in items:
            if it.message_id not in found and it.message_id not in seen:
                seen.add(it.message_id)
                fresh.setdefault(it.conversation_id, []).append(it)
        duplicates += len(items) - duplicates - len(seen)
        if duplicates:
            self.metrics.duplicates.inc(duplicates)
        taken = await asyncio.gather(
            *(
                self.sequencer.take(
                    conv, its[0].owner, len(its), bucket_now, shard_map.entry_of(conv).epoch
                )
                for conv, its in fresh.items()
            )
        )
        self.metrics.seq_gaps.inc(len(gaps))
        for its, got in zip(fresh.values(), taken, strict=True):
            if got.gap is not None:
                gaps.append(got.gap)
                self.metrics.seq_gaps.inc()
            for it, seq in zip(its, got.seqs, strict=True):
                found[it.message_id] = (seq, got.bucket)
                self._assigned[it.message_id] = (seq, got.bucket)
        while len(self._assigned) > ASSIGNED_CACHE:
            self._assigned.popitem(last=False)
        records: list[MessageRecord] = []
        done: set[str] = set()
        for it in items:
            if it.message_id in done:
                continue  # the same message twice in one batch: one row, one delivery
            done.add(it.message_id)
            seq, bucket = found[it.message_id]
            records.append(
                MessageRecord(
                    conversation_id=it.conversation_id,
                    bucket=bucket,
                    seq=seq,
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
            )
        return records, gaps

    async def _recipients(self, records: list[MessageRecord]) -> dict[str, list[str]]:
        return await fanout.recipients(self.redis, self.store, records)

    async def _persist(
        self, records: list[MessageRecord], new_index: list[tuple[str, str]]
    ) -> None:
        buckets = {(r.conversation_id, r.bucket) for r in records}
        new_buckets = [b for b in buckets if b not in self._buckets_written]
        owners = self._batch_owners
        # No await between the lease check and issuing the writes (see the module docstring).
        self._check_lease()
        self._unconfirmed |= owners
        await asyncio.gather(
            self.store.insert_messages(records),
            self.store.add_buckets(new_buckets),
            self.store.add_user_conversations(new_index),
        )
        self._unconfirmed -= owners
        for b in new_buckets:
            self._buckets_written.add(b)

    async def _cache(
        self, records: list[MessageRecord], views: list[str], new_index: list[tuple[str, str]]
    ) -> None:
        await fanout.cache(
            self.redis, self._max_seq, records, views, new_index, size=self.cfg.recent_cache_size
        )

    async def _route(
        self,
        records: list[MessageRecord],
        frames: list[str],
        members: dict[str, list[str]],
        gaps: list[Gap] = (),  # type: ignore[assignment]
    ) -> None:
        routed, offline = await fanout.route(self.redis, records, frames, members, gaps)
        self.metrics.routed.inc(routed)
        self.metrics.offline.inc(offline)


def _row(record: MessageRecord) -> list[Any]:
    """The message row's values in MESSAGE_COLUMNS order (what a relay writes)."""
    return [getattr(record, column) for column in MESSAGE_COLUMNS.split(", ")]


def _assignors(mirrored: bool) -> tuple[Any, ...]:
    """RoundRobin on a one-region stack (as before); Range with mirrored topics, which gives
    partition p of every topic to the same member when the partition counts agree."""
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    return (RangePartitionAssignor,) if mirrored else (RoundRobinPartitionAssignor,)


def _rebalance_listener(dispatcher: Dispatcher) -> Any:
    """aiokafka's rebalance listener, forwarding to the dispatcher (aiokafka is imported only
    once the process listens, so the class is made here)."""
    from aiokafka import ConsumerRebalanceListener

    class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: set[Any]) -> None:
            await dispatcher.on_revoked(revoked)

        async def on_partitions_assigned(self, assigned: set[Any]) -> None:
            await dispatcher.on_assigned(assigned)

    return Rebalance()


def main() -> None:
    config = load_or_exit("dispatcher")
    setup_logging(config.log_level, config.node_id)
    raise SystemExit(asyncio.run(Dispatcher(config).run()))


if __name__ == "__main__":
    main()
