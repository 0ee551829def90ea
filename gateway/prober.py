"""The conflict prober (docs/multi-region.md section 8.1): finds (conversation, seq) pairs that
name two different message ids, by reading every datacenter's copy separately.

It runs inside every region's relay (gateway/relay.py), over the conversations that relay
applied most recently: each conversation homed in one region is probed by every other region's
relay. Every ``PROBE_INTERVAL_S`` it reads, for each conversation relayed since the last run
plus the next ``ROTATION`` of the most recent ``SAMPLE_SIZE`` (so a conflict written later,
e.g. by a zombie, is found without new traffic), and for **each** DC on
its own (``LOCAL_ONE`` through a per-DC execution profile, so one DC's copy is never hidden
behind another's), the ``message_seqs`` rows (message id -> seq) and the newest message rows
of the conversation's buckets, and counts a seq as a conflict when these claims, over every DC
together, name more than one message id. ``message_seqs`` is keyed by message id, so two
messages given one seq stay visible there even after last-write-wins made the message rows of
every DC agree on one of them.

Metrics (``im_prober_``, in the relay's registry): ``conflicts_total`` (each (conversation,
seq) counted once per process), ``checked_total`` (pairs compared), ``conversations_total``,
``read_failures_total{datacenter}`` and ``last_run_timestamp_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.metrics import ProberMetrics
from gateway.runtime import in_daemon_thread
from gateway.store import CassandraStore, _await

log = logging.getLogger("gateway.prober")

PROBE_INTERVAL_S = 5.0
SAMPLE_SIZE = 256  # conversations kept (the most recently relayed), probed in rotation
ROTATION = 32  # of them per run, besides those relayed since the last run
MAX_ROWS = 5000  # rows read per conversation and DC (message_seqs; the newest message rows)
COUNTED_MAX = 100_000  # conflicts remembered, so that each is counted once
READ_TIMEOUT_S = 5.0
PROFILE_PREFIX = "prober-dc-"


@dataclass
class ProbeRun:
    """What one run found: pairs compared, and the conflicting (conversation, seq) -> ids."""

    checked: int = 0
    conversations: int = 0
    conflicts: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)  # datacenters not read


def conflicting(claims: Iterable[tuple[int, str]]) -> tuple[int, dict[int, set[str]]]:
    """(number of distinct seqs, seq -> ids for the seqs claimed by more than one id)."""
    by_seq: dict[int, set[str]] = defaultdict(set)
    for seq, message_id in claims:
        by_seq[seq].add(message_id)
    return len(by_seq), {seq: ids for seq, ids in by_seq.items() if len(ids) > 1}


class Prober:
    def __init__(self, store: CassandraStore, metrics: ProberMetrics) -> None:
        self.store = store
        self.metrics = metrics
        self.sample: OrderedDict[str, None] = OrderedDict()
        self._touched: set[str] = set()  # relayed since the last run
        self._turn = 0  # where the rotation through the sample goes on
        self._counted: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._profiles: set[str] = set()
        self._prepared: dict[str, Any] = {}

    def note(self, conversation_ids: Iterable[str]) -> None:
        """Conversations just relayed: the most recent SAMPLE_SIZE are probed."""
        for conv in conversation_ids:
            self.sample[conv] = None
            self.sample.move_to_end(conv)
            self._touched.add(conv)
        while len(self.sample) > SAMPLE_SIZE:
            self.sample.popitem(last=False)

    def datacenters(self) -> list[str]:
        """The DCs holding the keyspace (its NetworkTopologyStrategy), else every DC seen."""
        cluster = self.store.session.cluster
        keyspace = cluster.metadata.keyspaces.get(self.store.keyspace)
        strategy = getattr(keyspace, "replication_strategy", None)
        factors = getattr(strategy, "dc_replication_factors", None)
        if factors:
            return sorted(dc for dc, rf in factors.items() if int(rf) > 0)
        return sorted({h.datacenter for h in cluster.metadata.all_hosts() if h.datacenter})

    def _add_profile(self, dc: str) -> None:
        """Blocking: an execution profile whose queries go to ``dc`` only."""
        from cassandra import ConsistencyLevel
        from cassandra.cluster import ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy

        profile = ExecutionProfile(
            load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=dc),
            consistency_level=ConsistencyLevel.LOCAL_ONE,
            request_timeout=READ_TIMEOUT_S,
        )
        self.store.session.cluster.add_execution_profile(PROFILE_PREFIX + dc, profile)

    def _prepare(self) -> None:
        ks = self.store.keyspace
        session = self.store.session
        self._prepared = {
            "seqs": session.prepare(
                f"SELECT message_id, seq, bucket FROM {ks}.message_seqs "
                f"WHERE conversation_id = ? LIMIT {MAX_ROWS}"
            ),
            "rows": session.prepare(
                f"SELECT seq, message_id FROM {ks}.messages WHERE conversation_id = ? "
                f"AND bucket = ? ORDER BY seq DESC LIMIT {MAX_ROWS}"
            ),
        }

    async def _ensure(self, dcs: list[str]) -> None:
        if not self._prepared:
            await in_daemon_thread(self._prepare)
        for dc in dcs:
            if dc not in self._profiles:
                await in_daemon_thread(lambda dc=dc: self._add_profile(dc))  # type: ignore[misc]
                self._profiles.add(dc)

    async def _read(self, dc: str, name: str, params: tuple[Any, ...]) -> Any:
        session = self.store.session
        future = session.execute_async(
            self._prepared[name], params, execution_profile=PROFILE_PREFIX + dc
        )
        return await _await(future)

    async def _claims(self, dc: str, conv: str) -> list[tuple[int, str]]:
        """(seq, message id) as ``dc`` stores them: message_seqs, then the message rows."""
        claims: list[tuple[int, str]] = []
        buckets: set[int] = set()
        for row in await self._read(dc, "seqs", (conv,)):
            claims.append((row.seq, row.message_id))
            if row.bucket is not None:
                buckets.add(row.bucket)
        for bucket in sorted(buckets):
            rows = await self._read(dc, "rows", (conv, bucket))
            claims.extend((r.seq, r.message_id) for r in rows)
        return claims

    async def probe(self, conversations: Iterable[str]) -> ProbeRun:
        """Compare every DC's claims for ``conversations``; count what is new."""
        run = ProbeRun()
        if not self.store.ready:
            return run
        dcs = self.datacenters()
        await self._ensure(dcs)
        for conv in conversations:
            claims: list[tuple[int, str]] = []
            for dc in dcs:
                try:
                    claims.extend(await self._claims(dc, conv))
                except Exception as exc:
                    if dc not in run.failed:
                        log.warning("prober: %s not readable: %r", dc, exc)
                    run.failed.add(dc)
                    self.metrics.read_failures.labels(dc).inc()
            checked, found = conflicting(claims)
            run.checked += checked
            run.conversations += 1
            for seq, ids in found.items():
                run.conflicts[(conv, seq)] = ids
        self.metrics.checked.inc(run.checked)
        self.metrics.conversations.inc(run.conversations)
        for pair, ids in run.conflicts.items():
            if pair in self._counted:
                continue
            log.error("conflict: %s seq %d names %s", pair[0], pair[1], sorted(ids))
            self._counted[pair] = None
            self.metrics.conflicts.inc()
            while len(self._counted) > COUNTED_MAX:
                self._counted.popitem(last=False)
        self.metrics.last_run.set(time.time())
        return run

    def next_batch(self) -> list[str]:
        """What the next run probes: every conversation relayed since the last run, then the
        next ROTATION of the sample."""
        batch = dict.fromkeys(c for c in self._touched if c in self.sample)
        self._touched = set()
        ring = list(self.sample)
        if ring:
            start = self._turn % len(ring)
            for conv in (ring[start:] + ring[:start])[:ROTATION]:
                batch[conv] = None
            self._turn = start + ROTATION
        return list(batch)

    async def loop(self, stopping: asyncio.Event) -> None:
        """Probe the sample every PROBE_INTERVAL_S until ``stopping`` (errors are logged)."""
        while not stopping.is_set():
            try:
                await self.probe(self.next_batch())
            except Exception as exc:
                log.warning("probe run failed: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), PROBE_INTERVAL_S)
