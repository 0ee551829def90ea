"""The gateway's clients of Redis, Kafka and Cassandra: connecting with backoff, the health
checks behind /readyz and im_gateway_backend_up, and closing them at shutdown.

Heavy client libraries are imported where first used, so the process listens fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gateway import redis_client, state
from gateway.config import Config
from gateway.metrics import GatewayMetrics
from gateway.producer import Producer
from gateway.runtime import Tasks, backoff, in_daemon_thread
from gateway.store import CassandraStore, close_store

log = logging.getLogger(__name__)

BACKENDS = ("kafka", "redis", "cassandra")


class Backends:
    def __init__(self, config: Config, metrics: GatewayMetrics, tasks: Tasks) -> None:
        self.cfg = config
        self.metrics = metrics
        self._tasks = tasks
        self.redis: Any = None
        self.producer = Producer(
            self._new_producer,
            lambda reason: metrics.kafka_producer_replacements.labels(reason).inc(),
        )
        self.max_receipt: Any = None  # the MAX_RECEIPT script
        self.kafka_ok = False
        self.redis_ok = False
        self.pubsub_ok = False  # set by the pub/sub loop
        # The shard map epoch stamped on each record ("ep"): 0 until the first read, which
        # only makes records of a moved shard held (docs/multi-region.md 5.5), never lost.
        self.map_epoch = 0
        self.store = CassandraStore.of_config(config)
        for backend in BACKENDS:
            metrics.backend_up.labels(backend).set(0)

    def readiness(self) -> tuple[bool, str]:
        if not self.kafka_ok:
            return False, "kafka unavailable"
        sending, why = self.producer.healthy()
        if not sending:
            return False, why
        if not (self.redis_ok and self.pubsub_ok):
            return False, "redis unavailable"
        if not self.store.ready:
            # Sync and groups need Cassandra: a session admitted before the first connect
            # would get an error instead of sync_done.
            return False, "cassandra not connected yet"
        return True, "ready"

    async def connect(self, stop: asyncio.Event) -> bool:
        """Redis at once, Kafka before returning, Cassandra in the background; False when
        ``stop`` was set first."""
        self.redis = redis_client.connect_config(self.cfg, max_connections=64, timeout_s=5)
        self.max_receipt = self.redis.register_script(state.MAX_RECEIPT)
        self._tasks.spawn(self._connect_cassandra(stop))
        await self._connect_kafka(stop)
        return not stop.is_set()

    async def _connect_kafka(self, stop: asyncio.Event) -> None:
        if await self.producer.start(stop):
            self.kafka_ok = True

    def _new_producer(self) -> Any:
        from aiokafka import AIOKafkaProducer

        return AIOKafkaProducer(
            **self.cfg.kafka_kwargs(),
            client_id=self.cfg.node_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.cfg.kafka_linger_ms,
            max_batch_size=256 * 1024,
            partitioner=CachedPartitioner(),
            request_timeout_ms=10000,
        )

    async def _connect_cassandra(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set() and not self.store.ready:
            try:
                await in_daemon_thread(self.store.connect)
            except Exception as exc:
                log.warning("cassandra not reachable yet: %r", exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    async def health_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(self.redis.ping(), 2)
                self.redis_ok = True
            except Exception:
                self.redis_ok = False
            try:
                if not self.producer.replacing:  # the old client is closed meanwhile
                    self.kafka_ok = await self.producer.cluster_answers(3)
                self.producer.healthy()  # starts a replacement that is due
            except Exception:
                self.kafka_ok = False
            m = self.metrics.backend_up
            m.labels("redis").set(1 if self.redis_ok else 0)
            m.labels("kafka").set(1 if self.kafka_ok else 0)
            m.labels("cassandra").set(1 if self.store.ready else 0)
            await asyncio.sleep(1.0)

    async def map_epoch_loop(self, stop: asyncio.Event) -> None:
        """Re-read the shard map epoch every REFRESH_S (LOCAL_QUORUM: sends never wait on
        another region)."""
        from gateway.shardmap import REFRESH_S, ControlStore

        control: ControlStore | None = None
        while not stop.is_set():
            try:
                if control is None and self.store.ready:
                    control = ControlStore(self.store.session, self.cfg.cassandra_control_keyspace)
                if control is not None:
                    epoch = await control.read_epoch()
                    if epoch is not None and epoch > self.map_epoch:
                        self.map_epoch = epoch
            except Exception as exc:
                log.debug("shard map epoch not read: %r", exc)
            await asyncio.sleep(REFRESH_S)

    async def stop_producer(self) -> None:
        await self.producer.close()

    async def close(self) -> None:
        """Redis and Cassandra; the producer is stopped earlier (stop_producer)."""
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.redis.aclose(), 1)
        await close_store(self.store)


class CachedPartitioner:
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
