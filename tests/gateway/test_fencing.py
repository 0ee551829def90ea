"""Seqs that can never be assigned twice, against the real stack with the real faults
(docs/multi-region.md section 5): a Redis failover that loses acknowledged writes, a dispatcher
SIGKILLed mid-stream with a second one taking over, a SIGSTOP'd dispatcher that wakes up after
losing its partitions (a zombie), and the redelivery of every record of the topic.

Afterwards Cassandra is read directly: no (conversation, seq) names two messages, no message
has two seqs, every id -> seq entry points at its own message row, every acked message is there,
and every hole in a conversation's seqs is an announced in-doubt range.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from opsctl.local import LocalStack
from opsctl.local._procs import find_free_port_block
from tests.gateway.conftest import Im
from tests.gateway.protocol_client import ProtocolClient, dm
from tests.gateway.support import injected_record, produce, stop_process
from tests.support import wait_for

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_S = 10  # gateway.dispatcher.SESSION_TIMEOUT_MS


# ---- helpers -------------------------------------------------------------------------------


class Cql:
    def __init__(self, stack: LocalStack) -> None:
        from cassandra.cluster import Cluster

        info = stack.info
        self.cluster = Cluster(
            [info.cassandra_host], port=info.cassandra_port, **stack.cassandra_kwargs()
        )
        self.session = self.cluster.connect(info.cassandra_keyspace)

    def close(self) -> None:
        self.cluster.shutdown()

    def messages(self, conv: str) -> list[tuple[int, int, str]]:
        """(bucket, seq, message_id) of every message row of the conversation."""
        rows: list[tuple[int, int, str]] = []
        buckets = self.session.execute(
            "SELECT bucket FROM conversation_buckets WHERE conversation_id = %s", (conv,)
        )
        for b in buckets:
            for row in self.session.execute(
                "SELECT seq, message_id FROM messages WHERE conversation_id = %s AND bucket = %s",
                (conv, b.bucket),
            ):
                rows.append((b.bucket, row.seq, row.message_id))
        return rows

    def message_seqs(self, conv: str) -> dict[str, int]:
        rows = self.session.execute(
            "SELECT message_id, seq FROM message_seqs WHERE conversation_id = %s", (conv,)
        )
        return {row.message_id: row.seq for row in rows}

    def gaps(self, conv: str) -> list[tuple[int, int]]:
        rows = self.session.execute(
            "SELECT low, high FROM seq_gaps WHERE conversation_id = %s", (conv,)
        )
        return [(row.low, row.high) for row in rows]

    def check(self, conv: str, acked: set[str]) -> tuple[int, list[tuple[int, int]]]:
        """The invariants of one conversation; returns (highest seq, recorded gaps)."""
        rows = self.messages(conv)
        seqs = [seq for _, seq, _ in rows]
        by_seq = {seq: mid for _, seq, mid in rows}
        mids = [mid for _, _, mid in rows]
        assert len(seqs) == len(set(seqs)), f"{conv}: a seq in two buckets"
        assert len(mids) == len(set(mids)), f"{conv}: a message with two seqs"
        index = self.message_seqs(conv)
        for mid, seq in index.items():
            assert by_seq.get(seq) == mid, f"{conv}: seq {seq} is not {mid} (overwritten?)"
        assert set(index) == set(mids), f"{conv}: message rows and message_seqs differ"
        missing = acked - set(mids)
        assert not missing, f"{conv}: {len(missing)} acked messages lost"
        gaps = self.gaps(conv)
        covered = {n for low, high in gaps for n in range(low, high + 1)}
        holes = set(range(1, max(seqs, default=0) + 1)) - set(seqs)
        assert holes <= covered, f"{conv}: holes {sorted(holes - covered)[:10]} not announced"
        return max(seqs, default=0), gaps


def metrics(url: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    return False


@contextlib.contextmanager
def second_dispatcher(stack: LocalStack, tmp_path: Path) -> Iterator[str]:
    """A second dispatcher in the same consumer group; yields its base URL, stops it after."""
    port = find_free_port_block(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGW_")}
    env.update(stack.imgw_env())
    env.update({"IMGW_NODE_ID": "dispatcher-2", "IMGW_LISTEN_PORT": str(port)})
    env["PYTHONUNBUFFERED"] = "1"
    log = (tmp_path / "dispatcher-2.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.dispatcher"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("dispatcher-2 ready", lambda: ready(url), timeout=60, interval=0.2)
        yield url
    finally:
        stop_process(proc)
        log.close()


def _pairs_on_every_partition(im: Im, pairs: int, partitions: int) -> list[tuple[str, str]]:
    """At least ``pairs`` DM pairs whose conversations (the records' key) cover every partition
    of the topic, so whichever partitions a dispatcher is given carry load (with 6 random
    pairs all on the other dispatcher's half was a 1-in-64 flake)."""
    from aiokafka.partitioner import DefaultPartitioner

    chosen: list[tuple[str, str]] = []
    covered: set[int] = set()
    i = 0
    while len(chosen) < pairs or len(covered) < partitions:
        pair = (im.uid(f"a{i}"), im.uid(f"b{i}"))
        partition = DefaultPartitioner()(dm(*pair).encode(), list(range(partitions)), [])
        if len(chosen) < pairs or partition not in covered:
            chosen.append(pair)
            covered.add(partition)
        i += 1
    return chosen


class Load:
    """DM pairs sending every ~20 ms; tracks what was acked."""

    def __init__(self, im: Im, pairs: int) -> None:
        self.im = im
        self.users = _pairs_on_every_partition(im, pairs, im.stack.info.kafka_partitions)
        self.clients: list[ProtocolClient] = []
        self.sent: dict[str, tuple[ProtocolClient, dict[str, Any]]] = {}
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def convs(self) -> list[str]:
        return [dm(a, b) for a, b in self.users]

    async def start(self) -> None:
        for a, b in self.users:
            for user in (a, b):
                client = self.im.client(user)
                await client.connect()
                self.clients.append(client)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            for n, (a, b) in enumerate(self.users):
                sender = self.clients[2 * n]
                if sender.connected.is_set():
                    cmid = await sender.send(f"{a}#{i}", to=b)
                    frame = {"op": "send", "client_msg_id": cmid, "body": f"{a}#{i}", "to": b}
                    self.sent[cmid] = (sender, frame)
            i += 1
            await asyncio.sleep(0.02)

    async def finish(self) -> dict[str, set[str]]:
        self.stop.set()
        if self.task is not None:
            await self.task
        for client in self.clients[::2]:
            await client.wait_until(lambda c=client: not c.unacked, 90, "every send acked")
        return {
            conv: {a["message_id"] for a in self.clients[2 * n].acks.values()}
            for n, conv in enumerate(self.convs)
        }

    async def devices_see_everything(self, acked: dict[str, set[str]]) -> None:
        """Every device ends with its cursor at the conversation's last seq: every hole was
        announced as a gap, and holds every acked message exactly once."""
        for n, conv in enumerate(self.convs):
            for client in self.clients[2 * n : 2 * n + 2]:
                await client.sync()

                def done(c: ProtocolClient = client, cv: str = conv) -> bool:
                    have = {c.messages[k]["message_id"] for k in c.messages if k[0] == cv}
                    return have >= acked[cv]

                await client.wait_until(done, 60, f"acked messages of {conv}")
                ids = [m["message_id"] for k, m in client.messages.items() if k[0] == conv]
                assert len(ids) == len(set(ids)), "a device got one message at two seqs"


def in_thread(fn: Any, *args: Any) -> asyncio.Future[Any]:
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


# ---- the drills ------------------------------------------------------------------------------


def test_redis_failover_losing_acknowledged_writes_reuses_no_seq(im: Im) -> None:
    """Restore Redis to an earlier copy of its keys (a failover to a lagging replica) while
    sending, then resend sends whose gateway dedup keys that lost: one seq per message."""
    stack = im.stack
    r = redis.Redis.from_url(stack.info.redis_url, **stack.redis_kwargs())

    async def scenario(cql: Cql) -> None:
        load = Load(im, 3)
        await load.start()
        await asyncio.sleep(2)
        snapshot = {
            key: (r.dump(key), r.pttl(key)) for key in r.scan_iter(match="im:*", count=1000)
        }
        await asyncio.sleep(2)  # acknowledged writes the "replica" never got
        acked_since = [
            (sender, frame)
            for sender, frame in load.sent.values()
            if frame["client_msg_id"] in sender.acks
        ][-30:]
        r.flushall()
        pipe = r.pipeline(transaction=False)
        for key, (value, pttl) in snapshot.items():
            if value is not None:
                pipe.restore(key, max(pttl, 0), value, replace=True)
        pipe.execute()
        # Late resends of acked messages whose dedup keys Redis just lost: the gateways accept
        # them again, Kafka gets a second record of each, the dispatcher must reuse the seq.
        assert acked_since
        for sender, frame in acked_since:
            await sender.send_frame(frame)
        await asyncio.sleep(2)
        acked = await load.finish()
        await asyncio.sleep(1)
        for conv in load.convs:
            last, _gaps = await in_thread(cql.check, conv, acked[conv])
            assert last >= len(acked[conv])
        await load.devices_see_everything(acked)

    _run_scenario(im, scenario)


def test_sigkill_dispatcher_second_one_takes_over_with_announced_gaps(
    im: Im, tmp_path: Path
) -> None:
    stack = im.stack

    async def scenario(cql: Cql) -> None:
        with second_dispatcher(stack, tmp_path) as second:
            load = Load(im, 6)
            await load.start()
            # Kill only once the group has settled and the first dispatcher sequences again
            # after the rebalance: blocks reserved before it were released with markers.
            await in_thread(lambda: _sequencing_after_rebalance(stack.info.dispatcher_url, second))
            gaps_metric = "im_dispatcher_seq_gaps_total"
            before = metrics(second)
            await in_thread(stack.kill, "dispatcher")  # SIGKILL mid-stream: no marker
            # After the session timeout the group gives dispatcher-2 the killed one's
            # partitions; the load keeps running until it has sequenced there, turning the
            # killed one's reserved blocks into in-doubt ranges (a fixed sleep was too short
            # on a loaded CI machine).
            await in_thread(
                lambda: wait_for(
                    "dispatcher-2 records the killed dispatcher's blocks as gaps",
                    lambda: metrics(second)[gaps_metric] > before[gaps_metric],
                    timeout=SESSION_TIMEOUT_S + 90,
                    interval=0.5,
                )
            )
            acked = await load.finish()
            await in_thread(stack.start, "dispatcher")
            recorded = 0
            for conv in load.convs:
                _, gaps = await in_thread(cql.check, conv, acked[conv])
                recorded += len(gaps)
            assert recorded > 0, "the killed dispatcher's reserved blocks became gaps"
            await load.devices_see_everything(acked)
            announced = [g for c in load.clients for v in load.convs for g in c.announced_gaps(v)]
            assert announced, "no client was told about an in-doubt range"

    _run_scenario(im, scenario)


def _sequencing_after_rebalance(first: str, second: str) -> None:
    """Wait until the second dispatcher persists (it owns partitions: the rebalance is done),
    then until the first one persists more (it holds a block it has not used up)."""
    persisted = "im_dispatcher_persisted_total"
    second_start = metrics(second)[persisted]
    wait_for(
        "dispatcher-2 sequencing",
        lambda: metrics(second)[persisted] > second_start,
        timeout=90,
        interval=0.5,
    )
    first_start = metrics(first)[persisted]
    wait_for(
        "dispatcher-1 sequencing after the rebalance",
        lambda: metrics(first)[persisted] > first_start + 5,
        timeout=60,
        interval=0.5,
    )


def test_a_frozen_dispatcher_woken_after_the_takeover_writes_no_conflicting_seq(
    im: Im, tmp_path: Path
) -> None:
    stack = im.stack

    async def scenario(cql: Cql) -> None:
        with second_dispatcher(stack, tmp_path):
            load = Load(im, 6)
            await load.start()
            await asyncio.sleep(3)
            pid = stack.pid("dispatcher")
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(SESSION_TIMEOUT_S + 6)  # dispatcher-2 sequences its share
            finally:
                os.kill(pid, signal.SIGCONT)  # the zombie wakes with its old blocks
            await asyncio.sleep(8)  # it rejoins; load keeps running
            acked = await load.finish()
            await asyncio.sleep(1)
            for conv in load.convs:
                await in_thread(cql.check, conv, acked[conv])
            zombie = metrics(stack.info.dispatcher_url)
            assert zombie["im_dispatcher_ready"] == 1  # alive, and sequencing again
            await load.devices_see_everything(acked)

    _run_scenario(im, scenario)


def test_a_late_write_of_a_frozen_owner_lands_shadowed_and_its_message_gets_one_seq(
    im: Im,
) -> None:
    """The zombie's writes that were issued before it froze and go out when it wakes (after
    the takeover), injected into the real Cassandra as it would send them: a message row and
    its id -> seq entry at an in-doubt seq, timestamped before the takeover. The row stays
    invisible, and when the message's record comes round again it gets one new seq."""
    info = im.stack.info
    region = info.regions[0].name
    alice, bob = im.uid("late-a"), im.uid("late-b")
    conv = dm(alice, bob)
    cql = Cql(im.stack)
    try:
        # The previous owner (generation 0, no release marker) reserved seqs up to 20.
        cql.session.execute(
            "INSERT INTO conversation_seq (conversation_id, epoch, writer, ceiling) "
            "VALUES (%s, 0, %s, 20) IF NOT EXISTS",
            (conv, f"{region}:0:0"),
        )
        first = injected_record(region, conv, alice, to=bob, body="after the takeover")
        late = injected_record(region, conv, alice, to=bob, body="written late")
        before = metrics(info.dispatcher_url).get("im_dispatcher_late_writes_shadowed_total", 0)
        asyncio.run(produce(info.kafka_bootstrap, info.kafka_topic, [(conv, _value(first))]))
        rows = wait_for("the first message persisted", lambda: cql.messages(conv), timeout=60)
        [(bucket, seq, _)] = rows
        assert seq == 21  # above the old ceiling
        assert cql.gaps(conv) == [(1, 20)]

        issued_us = (time.time_ns() // 1000) - 20_000_000  # before the freeze and the takeover
        cql.session.execute(
            "INSERT INTO messages (conversation_id, bucket, seq, message_id, sender, body) "
            "VALUES (%s, %s, 5, %s, %s, 'written late') USING TIMESTAMP %s",
            (conv, bucket, late["mid"], alice, issued_us),
        )
        cql.session.execute(
            "INSERT INTO message_seqs (conversation_id, message_id, seq, bucket) "
            "VALUES (%s, %s, 5, %s) USING TIMESTAMP %s",
            (conv, late["mid"], bucket, issued_us),
        )
        assert [s for _, s, _ in cql.messages(conv)] == [21]  # the late row is invisible

        asyncio.run(produce(info.kafka_bootstrap, info.kafka_topic, [(conv, _value(late))]))
        wait_for("the late message sequenced", lambda: len(cql.messages(conv)) == 2, timeout=60)
        assert cql.message_seqs(conv) == {first["mid"]: 21, late["mid"]: 22}
        cql.check(conv, {first["mid"], late["mid"]})
        after = metrics(info.dispatcher_url)["im_dispatcher_late_writes_shadowed_total"]
        assert after == before + 1
    finally:
        cql.close()


def _value(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def test_redelivery_of_every_record_gives_no_new_seq(im: Im) -> None:
    """Stop the dispatcher, reset its group to the start of the topic, start it again: it
    consumes every record of the topic once more and assigns no new seq."""
    stack = im.stack

    async def scenario(cql: Cql) -> None:
        load = Load(im, 3)
        await load.start()
        await asyncio.sleep(2)
        acked = await load.finish()
        await asyncio.sleep(1)
        before = {conv: sorted(cql.messages(conv)) for conv in load.convs}
        group = next(
            name.split('group="')[1].split('"')[0]
            for name in metrics(stack.info.dispatcher_url)
            if name.startswith("im_dispatcher_info{")
        )
        await in_thread(stack.stop, "dispatcher")
        await _reset_offsets(stack, group)
        await in_thread(stack.start, "dispatcher")
        url = stack.info.dispatcher_url

        def caught_up() -> bool:
            values = metrics(url)
            lag = [v for k, v in values.items() if k.startswith("im_dispatcher_consumer_lag")]
            return bool(lag) and max(lag) == 0 and values["im_dispatcher_duplicates_total"] > 0

        await in_thread(lambda: wait_for("redelivery done", caught_up, timeout=120, interval=0.5))
        duplicates = metrics(url)["im_dispatcher_duplicates_total"]
        assert duplicates >= sum(len(ids) for ids in acked.values())
        for conv in load.convs:
            assert sorted(cql.messages(conv)) == before[conv], f"{conv}: seqs changed"
            await in_thread(cql.check, conv, acked[conv])

    _run_scenario(im, scenario)


async def _reset_offsets(stack: LocalStack, group: str) -> None:
    """Commit offset 0 for every partition as a non-member (allowed: the group is empty)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    info = stack.info
    consumer = AIOKafkaConsumer(
        bootstrap_servers=info.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(info.kafka_topic, p) for p in range(info.kafka_partitions)]
        consumer.assign(tps)
        deadline = time.monotonic() + 30
        while True:
            try:
                await consumer.commit(dict.fromkeys(tps, 0))
                return
            except Exception:  # the group may still list the stopped member for a moment
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)
    finally:
        await consumer.stop()


def _run_scenario(im: Im, scenario: Callable[[Cql], Coroutine[Any, Any, None]]) -> None:
    """Run ``scenario`` with a CQL session, then close the clients, restart what it stopped and
    close the session."""
    cql = Cql(im.stack)
    try:
        asyncio.run(_with_cleanup(im, scenario(cql)))
    finally:
        cql.close()


async def _with_cleanup(im: Im, scenario: Any) -> None:
    try:
        await scenario
    finally:
        await im.close_all()
        await asyncio.get_running_loop().run_in_executor(None, im.stack.up)
