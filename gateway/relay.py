"""The relay: live delivery of messages homed in other regions (docs/multi-region.md section 6).

Run: ``python -m gateway.relay`` (one or more per region; consumer group ``im-relay.<region>``).
It consumes ``<peer>.<IMGW_KAFKA_DELIVERIES_TOPIC>`` for every peer in IMGW_REGIONS (what
MirrorMaker 2 mirrors from each peer's deliveries topic), and for each persisted message, in
the order the home produced them:

1. writes the message row (and its ``message_seqs`` row, bucket and user index) into the
   **local** DC at ``LOCAL_QUORUM`` with the home's write timestamp (``USING TIMESTAMP``:
   persisted_at), so the row is identical to the one Cassandra replicates and "persisted before
   published" holds in this region too;
2. updates the local recent-message cache, the seq hint and the users' conversation index;
3. publishes it to the local gateways that hold a member's session (gateway.fanout, as the
   dispatcher does at home); in-doubt ranges the home announced travel the same way as ``gap``.

Offsets are committed after all three (at-least-once; each step is idempotent). Records this
region produced itself are skipped (a mirror can carry them back).

It also produces a **beacon** (its send time) to its own region's deliveries topic every second;
the peers' relays export the age of the newest beacon from each peer, computed when scraped, as
``im_relay_replication_lag_seconds{source,target}`` (MirrorMaker 2's own latency metric moves
only while records flow): a dead link shows a lag that grows with time, never a frozen last
value. Until the first beacon from a peer arrives it is the time since the relay started.
``im_relay_last_beacon_timestamp_seconds`` is the newest beacon's send time.

The relay also runs the conflict prober (gateway/prober.py) over the conversations it relays,
and carries receipts, presence and group membership changes between the regions
(gateway/region_events.py: out through its own deliveries topic as records ``r``, ``p`` and
``i``, in from the peers' with the messages; a batch's membership changes are applied before
its messages are routed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

from gateway import fanout, region_events, state
from gateway.config import Config, load_or_exit
from gateway.metrics import ProberMetrics, RelayMetrics
from gateway.prober import Prober
from gateway.protocol import encode, message_frame
from gateway.runtime import backoff, setup_logging
from gateway.sequencer import Gap
from gateway.store import MessageRecord, close_store
from gateway.worker import KafkaWorker

log = logging.getLogger("gateway.relay")

BEACON_S = 1.0


class Relay(KafkaWorker):
    name = "relay"
    metrics: RelayMetrics

    def __init__(self, config: Config) -> None:
        super().__init__(config, RelayMetrics())
        self.metrics.info.labels(config.region, config.relay_group).set(1)
        self.topics = [f"{peer}.{config.kafka_deliveries_topic}" for peer in config.peers]
        self.producer: Any = None
        self._started = time.time()
        self._beacons: dict[str, float] = {}  # source region -> newest beacon's send time (s)
        self.prober = Prober(self.store, ProberMetrics(self.metrics.registry))
        self.forwarder = region_events.Forwarder(
            config.region, config.kafka_deliveries_topic, config.route_ttl_s, self.metrics
        )
        self._max_receipt: Any = None
        self._repeats: set[asyncio.Task[None]] = set()  # region_events.MEMBERSHIP_REPEAT_S
        self.refresh_lag()

    def readiness(self) -> tuple[bool, str]:
        if self.stopping.is_set():
            return False, "stopping"
        if self.consumer is None:
            return False, "kafka not connected yet"
        if not self.store.ready:
            return False, "cassandra unavailable"
        return True, "ready"

    def refresh_lag(self, now: float | None = None) -> None:
        """Set each peer's lag to the age of its newest beacon at ``now`` (or the time since
        start before the first): called on every scrape, so the gauge never goes stale."""
        now = time.time() if now is None else now
        for peer in self.cfg.peers:
            newest = self._beacons.get(peer, self._started)
            self.metrics.replication_lag.labels(peer, self.cfg.region).set(max(0.0, now - newest))

    def _render(self) -> bytes:
        self.refresh_lag()
        return super()._render()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        async with self.serve():
            log.info(
                "listening on %s:%s; relaying %s",
                self.cfg.listen_host,
                self.cfg.listen_port,
                self.topics or "nothing (no peers in IMGW_REGIONS)",
            )
            await self._connect()
            tasks = [
                asyncio.create_task(self._beacon_loop()),
                asyncio.create_task(self.prober.loop(self.stopping)),
            ]
            if self.cfg.peers and self.producer is not None:
                forwarder = self.forwarder
                tasks += [
                    asyncio.create_task(forwarder.subscribe_loop(self.redis, self.stopping)),
                    asyncio.create_task(forwarder.refresh_loop(self.redis, self.stopping)),
                    asyncio.create_task(forwarder.produce_loop(self.producer)),
                ]
            try:
                await self._consume_loop()
            finally:
                for task in tasks:
                    task.cancel()
                await self._shutdown()
        return 0

    async def _connect(self) -> None:
        await self.connect_redis_and_store()
        self._max_receipt = self.redis.register_script(state.MAX_RECEIPT)
        started = await self.start_kafka(self._kafka_clients, self._start_kafka)
        if started is not None:
            self.consumer, self.producer = started

    def _kafka_clients(self) -> tuple[Any, Any]:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        consumer = AIOKafkaConsumer(
            **self.cfg.kafka_kwargs(),
            group_id=self.cfg.relay_group,
            client_id=self.cfg.node_id,
            enable_auto_commit=False,
            auto_offset_reset="latest",  # live delivery; history is in Cassandra
            fetch_max_wait_ms=10,
            max_poll_records=1000,
            metadata_max_age_ms=30000,
        )
        producer = AIOKafkaProducer(**self.cfg.kafka_kwargs(), acks="all", enable_idempotence=True)
        return consumer, producer

    async def _start_kafka(self, consumer: Any, producer: Any) -> None:
        if self.topics:
            consumer.subscribe(self.topics)
        await consumer.start()
        await producer.start()

    async def _beacon_loop(self) -> None:
        while not self.stopping.is_set():
            if self.producer is not None:
                value = state.encode_delivery_record(
                    "b", self.cfg.region, ts=int(time.time() * 1000)
                )
                try:
                    await self.producer.send(
                        self.cfg.kafka_deliveries_topic, value=value, key=self.cfg.region.encode()
                    )
                except Exception as exc:
                    log.debug("beacon not sent: %r", exc)
            await self._sleep(BEACON_S)

    async def _consume_loop(self) -> None:
        if self.consumer is None:
            return
        while not self.stopping.is_set():
            if not self.topics:
                await self._sleep(1.0)
                continue
            batches = await self.consumer.getmany(timeout_ms=100, max_records=1000)
            if not batches:
                continue
            records = [r for part in batches.values() for r in part]
            attempt = 0
            while not self.stopping.is_set():
                try:
                    await self.apply([r.value for r in records])
                    break
                except Exception as exc:
                    log.warning("relay batch failed at %s, retrying: %r", self.stage, exc)
                    self.metrics.failures.labels(self.stage).inc()
                    await self._sleep(backoff(attempt))
                    attempt += 1
            else:
                return  # stopping: not committed, the next relay redoes it
            offsets = {tp: part[-1].offset + 1 for tp, part in batches.items()}
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:
                log.warning("commit failed (records will be redelivered): %r", exc)

    async def apply(self, values: list[bytes]) -> None:
        """Apply one batch of deliveries records (idempotent: a retry rewrites the same rows)."""
        now = time.time()
        records: list[MessageRecord] = []
        sources: list[str] = []
        gaps: list[Gap] = []
        # Receipts, presence, membership changes: (source region, record), by kind.
        events: dict[str, list[tuple[str, dict[str, Any]]]] = {"r": [], "p": [], "i": []}
        for value in values:
            data = state.decode_delivery_record(value)
            if data is None:
                self.metrics.skipped.inc()
                continue
            source = data["rg"]
            if source == self.cfg.region:
                continue  # our own, mirrored back
            kind = data["t"]
            try:
                if kind == "b":
                    self._beacon(source, int(data["ts"]) / 1000)
                elif kind == "m":
                    records.append(MessageRecord(*data["m"]))
                    sources.append(source)
                    self.metrics.applied.labels(source).inc()
                elif kind == "g":
                    gaps.append(Gap(str(data["c"]), int(data["lo"]), int(data["hi"])))
                elif kind in events:
                    if kind == "i":
                        region_events.membership_group(data)  # undecodable: skipped here
                    events[kind].append((source, data))
            except (KeyError, TypeError, ValueError):
                self.metrics.skipped.inc()
        self.refresh_lag(now)
        self.prober.note(r.conversation_id for r in records)
        if events["i"]:
            # Before the messages: one sent after a leave must not reach the leaver here.
            self.stage = "events"
            group_ids = [region_events.membership_group(data) for _, data in events["i"]]
            await region_events.apply_membership(self.redis, group_ids)
            self._repeat_membership(group_ids)
        if records or gaps:
            await self._apply_messages(records, sources, gaps)
        if events["r"] or events["p"]:
            # After the batch's messages: a receipt for a seq follows that seq's message.
            self.stage = "events"
            receipts = events["r"]
            moved = await region_events.apply_receipts(self.redis, self._max_receipt, receipts)
            self.metrics.receipts_applied.inc(moved)
            changed = await region_events.apply_presence(self.redis, events["p"])
            self.metrics.presence_changes.inc(changed)

    def _beacon(self, source: str, sent: float) -> None:
        if sent > self._beacons.get(source, 0.0):
            self._beacons[source] = sent
            self.metrics.last_beacon.labels(source, self.cfg.region).set(sent)

    def _repeat_membership(self, group_ids: list[str]) -> None:
        async def again() -> None:
            await asyncio.sleep(region_events.MEMBERSHIP_REPEAT_S)
            try:
                await region_events.apply_membership(self.redis, group_ids)
            except Exception as exc:  # the cache's TTL still bounds it
                log.warning("membership invalidation not repeated: %r", exc)

        task = asyncio.create_task(again())
        self._repeats.add(task)
        task.add_done_callback(self._repeats.discard)

    async def _apply_messages(
        self, records: list[MessageRecord], sources: list[str], gaps: list[Gap]
    ) -> None:
        self.stage = "persist"
        members = await fanout.recipients(
            self.redis, self.store, records, [g.conversation_id for g in gaps]
        )
        index = [(u, r.conversation_id) for r in records for u in members[r.conversation_id]]
        new_index = list(dict.fromkeys(index))
        await asyncio.gather(
            self.store.insert_messages(records),
            self.store.add_buckets({(r.conversation_id, r.bucket) for r in records}),
            self.store.add_user_conversations(new_index),
        )
        views = [encode(r.client_view()) for r in records]
        self.stage = "cache"
        await fanout.cache(
            self.redis, self._max_seq, records, views, new_index, size=self.cfg.recent_cache_size
        )
        self.stage = "route"
        frames = [message_frame(view) for view in views]
        routed, _offline = await fanout.route(self.redis, records, frames, members, gaps)
        self.metrics.routed.inc(routed)
        published = time.time()
        for r, source in zip(records, sources, strict=True):
            latency = max(0.0, published - r.accepted_at / 1000)
            self.metrics.delivery_latency.labels(source).observe(latency)

    async def _shutdown(self) -> None:
        for task in list(self._repeats):
            task.cancel()
        for client in (self.consumer, self.producer):
            with contextlib.suppress(Exception):
                if client is not None:
                    await asyncio.wait_for(client.stop(), 5)
        with contextlib.suppress(Exception):
            if self.redis is not None:
                await self.redis.aclose()
        await close_store(self.store)


def main() -> None:
    config = load_or_exit("relay")
    setup_logging(config.log_level, config.node_id)
    raise SystemExit(asyncio.run(Relay(config).run()))


if __name__ == "__main__":
    main()
