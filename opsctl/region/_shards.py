"""The shard map's side of a region operation, over ``gateway.shardmap``'s operations: one
Cassandra session (control keyspace plus the IM keyspace's ``message_seqs`` for
reconciliation) and a Kafka producer per region (lazily, for re-produced held records).

Every step is a compare-and-set on the map (``ControlStore.change``: ``IF map_epoch = seen``)
and is planned from the map as read now, so running a step twice, or re-running a whole
operation after a crash, only does what is still left.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.homes import shard_of
from gateway.shardmap import (
    ACTIVE,
    ControlStore,
    ShardMap,
    move,
    planned_move,
    reconcile,
    wait_released,
)
from opsctl.errors import CheckFailed

# Server errors the driver has no class for, whose request may be retried: Overloaded, and
# CAS_WRITE_UNKNOWN (protocol v5: "CAS operation result is unknown", a Paxos proposal
# accepted by fewer than a quorum, seen on a loaded machine).
_RETRIABLE_CODES = {0x1001, 0x1700}
# A reconciliation pass that met a transient error is tried again this often, this far apart.
RECONCILE_ATTEMPTS = 3
RECONCILE_RETRY_S = 1.0


def transient(exc: BaseException) -> bool:
    """A Cassandra timeout or unavailability: the outcome of the request is unknown (an LWT
    may have applied), so the step is re-planned from the map and tried again."""
    from cassandra import OperationTimedOut, RequestExecutionException
    from cassandra.cluster import NoHostAvailable
    from cassandra.protocol import ErrorMessage

    if isinstance(exc, ErrorMessage):
        return getattr(exc, "code", None) in _RETRIABLE_CODES
    return isinstance(exc, RequestExecutionException | OperationTimedOut | NoHostAvailable)


@dataclass(frozen=True)
class Backends:
    """Where the shard map and the regions' Kafkas are. ``cassandra_hosts``: contact points,
    the ones to prefer first (a surviving region's node when one region is gone)."""

    cassandra_hosts: list[tuple[str, int]]
    control_keyspace: str
    keyspace: str
    bucket_s: int
    kafka: Mapping[str, str]  # region -> bootstrap servers
    topic: str
    cassandra_auth: Any = None  # gateway.store.CassandraAuth: the role and CA, if any


@dataclass
class Shards:
    backends: Backends
    _store: Any = field(default=None, init=False)
    _control: ControlStore | None = field(default=None, init=False)
    _producers: dict[str, Any] = field(default_factory=dict, init=False)

    def connect(self) -> None:
        """Blocking: connect to Cassandra (exit 1 naming the hosts when it cannot)."""
        from gateway.store import CassandraStore

        b = self.backends
        store = CassandraStore(b.cassandra_hosts, b.keyspace, b.bucket_s, b.cassandra_auth)
        try:
            store.connect(keyspace=True, timeout_s=10.0)
        except Exception as exc:  # NoHostAvailable, timeouts: the driver's errors vary
            hosts = ", ".join(f"{h}:{p}" for h, p in b.cassandra_hosts)
            raise CheckFailed(
                f"cannot reach the shard map in Cassandra ({hosts}): {exc}",
                hint="is the stack up? `opsctl local status --stack <stack>`",
            ) from exc
        self._store = store
        self._control = ControlStore(store.session, b.control_keyspace)

    @property
    def control(self) -> ControlStore:
        if self._control is None:
            raise RuntimeError("Shards.connect() first")
        return self._control

    async def read(self) -> ShardMap:
        current = await self.control.read()
        if current is None:
            raise CheckFailed(
                "no shard map yet: the dispatchers create it when they start",
                hint="wait until every dispatcher is healthy (`opsctl local status`)",
            )
        return current

    async def planned(self, plan: Mapping[int, str], timeout_s: float) -> ShardMap:
        """Drain the shards, wait until their old homes' dispatchers applied that, move them
        (docs/multi-region.md 7.1 steps 1-2). Only the shards not yet active at their target
        (per the map as read now), so calling it again after a timeout redoes nothing. Exit 1
        when a dispatcher does not confirm in time; the shards then stay draining and a re-run
        continues."""
        current = await self.read()
        todo = {
            s: home
            for s, home in plan.items()
            if current.entry(s).home != home or current.entry(s).state != ACTIVE
        }
        if not todo:
            return current
        try:
            await planned_move(self.control, todo, timeout_s=timeout_s)
        except TimeoutError as exc:
            raise CheckFailed(str(exc), hint="re-run the same command to continue") from exc
        return await self.read()

    async def unplanned(self, plan: Mapping[int, str]) -> ShardMap:
        """Move at once, no drain (7.2): the old home is gone and cannot confirm anything."""
        return await move(self.control, plan, planned=False)

    async def wait_applied(self, regions: list[str], epoch: int, timeout_s: float) -> list[str]:
        """Wait until the live dispatchers of every region applied ``epoch``; the regions still
        behind at the timeout."""
        behind = []
        for region in regions:
            if not await wait_released(self.control, region, epoch, timeout_s):
                behind.append(region)
        return behind

    async def held(self, shards: set[int] | None = None) -> int:
        rows = await self.control.held()
        return len([h for h in rows if shards is None or h.shard in shards])

    async def reconcile(self, shards: set[int] | None = None) -> dict[str, int]:
        """Settle held records of active shards (7.3): already sequenced somewhere (read at
        consistency ALL) -> drop the hold; else re-produce it into its home's ``im.messages``
        at the current epoch. Exit 1 when a DC does not answer (a region is still gone)."""
        current = await self.read()
        store = self._store

        async def lookup(conv: str, ids: list[str], everywhere: bool) -> set[str]:
            return set(await store.message_seqs(conv, ids, everywhere=everywhere))

        async def produce(conv: str, value: bytes) -> None:
            home = current.entry(shard_of(conv)).home
            producer = await self._producer(home)
            await producer.send_and_wait(self.backends.topic, value=value, key=conv.encode())

        attempt = 0
        while True:
            try:
                return await reconcile(self.control, lookup, produce, shards=shards)
            except CheckFailed:
                raise
            except Exception as exc:  # Unavailable at ALL while a DC is down, Kafka errors
                # A pass is idempotent (it re-reads the holds), and a conditional write can end
                # with its outcome unknown under contention ("CAS operation result is unknown",
                # seen in CI): try the pass again before giving up.
                attempt += 1
                if transient(exc) and attempt < RECONCILE_ATTEMPTS:
                    await asyncio.sleep(RECONCILE_RETRY_S * attempt)
                    continue
                error = exc
                break
        raise CheckFailed(
            f"reconciliation did not finish: {type(error).__name__}: {error}",
            hint="every region's Cassandra DC must be up (reads at ALL); re-run to continue",
        ) from error

    async def _producer(self, region: str) -> Any:
        if region not in self._producers:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(
                bootstrap_servers=self.backends.kafka[region], acks="all", enable_idempotence=True
            )
            await producer.start()
            self._producers[region] = producer
        return self._producers[region]

    async def aclose(self) -> None:
        for producer in self._producers.values():
            with contextlib.suppress(Exception):
                await producer.stop()
        self._producers.clear()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = self._control = None
