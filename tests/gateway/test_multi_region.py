"""Two regions on the one-region stack's Kafka, Cassandra and Redis (docs/multi-region.md
sections 2, 3, 5.5 and 6), with real processes.

Each test gets its own topics (``im.messages.<sfx>``, ``im.deliveries.<sfx>``) and its own
control keyspace (a shard map over regions ``a`` and ``b``), so the stack's own dispatcher
never sees these records. What MirrorMaker 2 would do is done by hand: records "accepted in
region a and mirrored to b" are produced into ``a.<topic>`` on the same broker, and the relay
test copies ``<deliveries>`` to ``b.<deliveries>``. Both regions' "own" topic is the one
physical topic, so both dispatchers see its records: each must sequence only what it homes.

Region ``b`` uses the stack's Redis; the relay test gives region ``a`` a Redis of its own
(a second redis-server on loopback), so a message reaches region a's client only through the
relay.

The last test runs on the real multi-region stack (staging, the session's
``multi_region_stack``: a Kafka, Redis and Cassandra DC per region, MirrorMaker 2 between
them): a DM between users connected in two regions, with messages, receipts and presence
delivered both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.homes import shard_of
from gateway.protocol import dm_conversation, group_conversation, message_id
from opsctl.local import LocalStack
from opsctl.local._procs import find_free_port_block
from tests.gateway import support
from tests.gateway.conftest import Im
from tests.gateway.protocol_client import ProtocolClient, make_token
from tests.gateway.support import stop_process
from tests.gateway.test_fencing import Cql, metrics, ready
from tests.support import plain_redis_env, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REGIONS = ("a", "b")


@dataclass
class World:
    """The per-test names, and every process started for it (stopped at the end)."""

    stack: LocalStack
    tmp: Path
    sfx: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: list[tuple[subprocess.Popen[bytes], Any]] = field(default_factory=list)

    @property
    def topic(self) -> str:
        return f"im.messages.{self.sfx}"

    @property
    def deliveries(self) -> str:
        return f"im.deliveries.{self.sfx}"

    @property
    def control(self) -> str:
        return f"imctl_{self.sfx}"

    def env(self, region: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGW_")}
        env.update(self.stack.imgw_env())
        env.update(
            {
                "IMGW_REGION": region,
                "IMGW_REGIONS": ",".join(REGIONS),
                "IMGW_KAFKA_TOPIC": self.topic,
                "IMGW_KAFKA_DELIVERIES_TOPIC": self.deliveries,
                "IMGW_CASSANDRA_CONTROL_KEYSPACE": self.control,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def run(self, module: str, region: str, *args: str, **extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", module, *args],
            env=self.env(region, **extra),
            cwd=REPO,
            capture_output=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        return done.stdout.decode()

    def start(self, module: str, region: str, name: str, **extra: str) -> str:
        port = find_free_port_block(1)
        env = self.env(region, IMGW_NODE_ID=f"{name}-{self.sfx}", IMGW_LISTEN_PORT=str(port))
        env.update(extra)
        log = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", module], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append((proc, log))
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{name} ready", lambda: ready(url), timeout=90, interval=0.2)
        return url

    def start_dispatchers(self) -> tuple[str, str]:
        """One dispatcher per region; their base URLs (a, b)."""
        a = self.start("gateway.dispatcher", "a", "disp-a")
        return a, self.start("gateway.dispatcher", "b", "disp-b")

    def redis_server(self) -> str:
        port = find_free_port_block(1)
        argv = [str(self.stack.config.redis_server), "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no"]
        log = (self.tmp / "redis-a.log").open("wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((proc, log))
        url = f"redis://127.0.0.1:{port}/0"
        import redis

        def pong() -> bool:
            with contextlib.suppress(Exception):
                return bool(redis.Redis.from_url(url).ping())
            return False

        wait_for("redis a", pong, timeout=20, interval=0.1)
        return url

    def stop_all(self) -> None:
        for proc, log in reversed(self.procs):
            stop_process(proc)
            log.close()


@pytest.fixture
def world(im: Im, tmp_path: Path) -> Iterator[World]:
    w = World(im.stack, tmp_path)
    # Topics and the control keyspace (with its shard map over a and b) as migrate makes them,
    # plus the topics MirrorMaker 2 would create.
    w.run("gateway.migrate", "a")
    asyncio.run(_create_topics(w, [f"{r}.{w.topic}" for r in REGIONS] + [f"b.{w.deliveries}"]))
    try:
        yield w
    finally:
        w.stop_all()


async def _create_topics(w: World, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    info = w.stack.info
    admin = AIOKafkaAdminClient(bootstrap_servers=info.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, info.kafka_partitions, 1) for n in names])
    finally:
        await admin.close()


def record(conv: str, sender: str, cmid: str, *, ep: int = 0, rg: str = "a") -> dict[str, Any]:
    to = next(u for u in conv.split(":")[1:] if u != sender)
    return {
        "v": 2,
        "mid": message_id(sender, cmid),
        "conv": conv,
        "kind": "dm",
        "from": sender,
        "dev": "d1",
        "cmid": cmid,
        "to": to,
        "body": f"{sender}:{cmid}",
        "ts": int(time.time() * 1000),
        "gw": "test",
        "ep": ep,
        "rg": rg,
    }


async def produce(w: World, topic: str, records: list[dict[str, Any]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=w.stack.info.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(
                topic, value=json.dumps(r).encode(), key=r["conv"].encode()
            )
    finally:
        await producer.stop()


def convs_homed(w: World, home: str, n: int) -> list[str]:
    return support.convs_homed(REGIONS, home, n, w.sfx)


def sender_of(conv: str) -> str:
    return conv.split(":")[1]


def sequenced(cql: Cql, conv: str, mids: set[str], timeout: float = 60) -> dict[str, int]:
    """Wait until every id has a seq; check the conversation's invariants; id -> seq."""
    wait_for(
        f"{conv} sequenced",
        lambda: set(cql.message_seqs(conv)) >= mids,
        timeout=timeout,
        interval=0.3,
    )
    cql.check(conv, mids)
    return cql.message_seqs(conv)


def fence(cql: Cql, conv: str) -> tuple[int, str, int]:
    row = cql.session.execute(
        "SELECT epoch, writer, ceiling FROM conversation_seq WHERE conversation_id = %s", (conv,)
    ).one()
    return (row.epoch, row.writer, row.ceiling)


def shardmap_cli(w: World, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(w.run("gateway.shardmap", "b", *args))
    return out


# ---- the tests -----------------------------------------------------------------------------


def test_each_record_is_sequenced_once_by_its_home_and_foreign_ones_are_skipped(
    world: World,
) -> None:
    w = world
    disp_a, disp_b = w.start_dispatchers()
    in_a, in_b = convs_homed(w, "a", 3), convs_homed(w, "b", 3)
    records = [record(c, sender_of(c), f"m{i}", rg="a") for c in in_a + in_b for i in range(4)]
    # Accepted in region a: in a's own topic (both dispatchers read the one physical topic) and
    # mirrored into b's Kafka as a.<topic> (only b reads it): b gets its records twice.
    asyncio.run(produce(w, w.topic, records))
    asyncio.run(produce(w, f"a.{w.topic}", records))
    cql = Cql(w.stack)
    try:
        for conv in in_a + in_b:
            mids = {r["mid"] for r in records if r["conv"] == conv}
            seqs = sequenced(cql, conv, mids)
            assert sorted(seqs.values()) == [1, 2, 3, 4], f"{conv}: {seqs}"
            home = "a" if conv in in_a else "b"
            assert fence(cql, conv)[1].startswith(f"{home}:"), "sequenced by its home"
        a_homed = sum(1 for r in records if r["conv"] in in_a)
        b_homed = len(records) - a_homed

        def counted() -> bool:
            ma, mb = metrics(disp_a), metrics(disp_b)
            return (
                ma["im_dispatcher_foreign_records_total"] == b_homed
                and mb["im_dispatcher_foreign_records_total"] == 2 * a_homed
            )

        wait_for("foreign records counted", counted, timeout=30, interval=0.5)
        assert metrics(disp_b)["im_dispatcher_duplicates_total"] >= b_homed  # the mirrored copies
    finally:
        cql.close()


def test_a_planned_move_continues_above_the_old_ceiling_without_a_second_seq(
    world: World,
) -> None:
    w = world
    w.start("gateway.dispatcher", "a", "disp-a")
    disp_b = w.start("gateway.dispatcher", "b", "disp-b")
    (conv,) = convs_homed(w, "a", 1)
    shard = shard_of(conv)
    sender = sender_of(conv)
    before = [record(conv, sender, f"old{i}") for i in range(3)]
    asyncio.run(produce(w, w.topic, before))
    cql = Cql(w.stack)
    try:
        first = sequenced(cql, conv, {r["mid"] for r in before})
        assert sorted(first.values()) == [1, 2, 3]
        old_ceiling = fence(cql, conv)[2]
        moved = shardmap_cli(w, "move", "--shard", str(shard), "--to", "b")
        epoch = moved["epoch"]
        assert epoch == 2  # drain (1), then the move (2)
        shown = shardmap_cli(w, "show", "--shard", str(shard))
        assert shown["shards"][str(shard)] == {
            "home": "b",
            "epoch": 2,
            "state": "active",
            "moved": "planned",
        }
        # New sends stamped with the new epoch; a late duplicate of an old one stamped with the
        # old epoch (MirrorMaker replay); and an old-stamped send nobody sequenced yet.
        after = [record(conv, sender, f"new{i}", ep=epoch, rg="b") for i in range(3)]
        late_dup = before[0]
        late_new = record(conv, sender, "late", ep=0)
        asyncio.run(produce(w, w.topic, [*after, late_dup, late_new]))
        mids = {r["mid"] for r in before + after + [late_new]}
        seqs = sequenced(cql, conv, mids)
        assert seqs[late_dup["mid"]] == first[late_dup["mid"]], "a message got a second seq"
        for r in [*after, late_new]:
            assert seqs[r["mid"]] > old_ceiling, "the new home reused a seq of the old block"
        epoch_now, writer, _ = fence(cql, conv)
        assert epoch_now == epoch
        assert writer.startswith("b:")
        wait_for(
            "b applied the map",
            lambda: metrics(disp_b)["im_dispatcher_map_epoch"] == epoch,
            timeout=10,
        )
    finally:
        cql.close()


def test_after_an_unplanned_move_old_stamped_records_are_held_then_reconciled_once(
    world: World,
) -> None:
    w = world
    disp_a, disp_b = w.start_dispatchers()
    (conv,) = convs_homed(w, "a", 1)
    shard, sender = shard_of(conv), sender_of(conv)
    done = [record(conv, sender, f"s{i}") for i in range(2)]
    asyncio.run(produce(w, w.topic, done))
    cql = Cql(w.stack)
    try:
        first = sequenced(cql, conv, {r["mid"] for r in done})
        # Region a "is gone": its dispatcher stops; the shard moves without a drain.
        for proc, _log in w.procs[:1]:
            proc.terminate()
            proc.wait(30)
        moved = shardmap_cli(w, "move", "--shard", str(shard), "--to", "b", "--unplanned")
        assert moved["epoch"] == 1
        # b applies the move first: a record b consumed before that was skipped as a's (see
        # docs/multi-region.md 7.2 on rewinding the old home's mirrored topic, not built).
        wait_for(
            "b applied the move",
            lambda: metrics(disp_b)["im_dispatcher_map_epoch"] == 1,
            timeout=15,
            interval=0.2,
        )
        # Records accepted in a before it learned of the move (stamped 0) reach b through the
        # mirror: one b can find sequenced (reused), two it cannot know about (held).
        stranded = [record(conv, sender, f"x{i}") for i in range(2)]
        asyncio.run(produce(w, f"a.{w.topic}", [done[0], *stranded]))
        wait_for(
            "held",
            lambda: metrics(disp_b)["im_dispatcher_held_records_total"] >= len(stranded),
            timeout=30,
            interval=0.3,
        )
        held = shardmap_cli(w, "held")["held"]
        assert {h["message_id"] for h in held} == {r["mid"] for r in stranded}
        assert all(h["held_by"] == "b" and h["stamped_epoch"] == 0 for h in held)
        assert set(cql.message_seqs(conv)) == {r["mid"] for r in done}, "held means not sequenced"
        # Reconcile (all DCs answer here): sequenced now, under the new epoch, once.
        result = shardmap_cli(w, "reconcile")
        assert result == {"held": 2, "already_sequenced": 0, "sequenced": 2}
        seqs = sequenced(cql, conv, {r["mid"] for r in done + stranded})
        assert {m: seqs[m] for m in first} == first
        assert shardmap_cli(w, "held")["held"] == []
        again = shardmap_cli(w, "reconcile")
        assert again == {"held": 0, "already_sequenced": 0, "sequenced": 0}
        time.sleep(2)
        assert cql.message_seqs(conv) == seqs, "a second seq after reconciling twice"
        assert metrics(disp_b)["im_dispatcher_fencing_refusals_total"] == 0
        del disp_a
    finally:
        cql.close()


def test_the_relay_delivers_a_message_homed_in_b_to_clients_connected_in_a(
    im: Im, world: World
) -> None:
    """alice and bob are connected to region a's gateway (region a's own Redis); their
    conversation is homed in b, whose dispatcher uses the stack's Redis. The message reaches
    them only through b's deliveries topic, the mirror, and region a's relay."""
    w = world
    redis_a = w.redis_server()
    a = plain_redis_env(redis_a)
    w.start("gateway.dispatcher", "a", "disp-a", **a)
    w.start("gateway.dispatcher", "b", "disp-b")
    relay_a = w.start("gateway.relay", "a", "relay-a", **a)
    gw_a = w.start("gateway.server", "a", "gw-a", **a)
    ws_a = gw_a.replace("http://", "ws://") + "/ws"
    (conv,) = convs_homed(w, "b", 1)
    alice, bob = conv.split(":")[1:]

    async def scenario() -> None:
        mirror = asyncio.create_task(_mirror(w, w.deliveries, f"b.{w.deliveries}"))
        clients = [ProtocolClient([ws_a], u, "d1", _token(im, u)) for u in (alice, bob)]
        try:
            for client in clients:
                await client.connect()
            sent = time.monotonic()
            await clients[0].send("hello from a, homed in b", to=bob)
            for client in clients:

                def arrived(c: ProtocolClient = client) -> bool:
                    return c.bodies(conv) == ["hello from a, homed in b"]

                await client.wait_until(arrived, 30, "the relayed message")
            elapsed = time.monotonic() - sent
            message = next(m for k, m in clients[1].messages.items() if k[0] == conv)
            assert message["seq"] == 1
            print(f"cross-region delivery on loopback: {elapsed * 1000:.0f} ms")
        finally:
            for client in clients:
                await client.close()
            mirror.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mirror

    asyncio.run(scenario())
    cql = Cql(w.stack)
    try:
        assert fence(cql, conv)[1].startswith("b:")
    finally:
        cql.close()
    values = httpx.get(f"{relay_a}/metrics", timeout=5).text
    assert 'im_relay_applied_total{source="b"} 1.0' in values


def _token(im: Im, user: str) -> Callable[[], str]:
    return lambda: im.token(user)


async def _mirror(w: World, source: str, target: str) -> None:
    """What MirrorMaker 2 does for one topic: copy every record, same key and partition."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    bootstrap = w.stack.info.kafka_bootstrap
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=50)
            for tp, part in batches.items():
                for r in part:
                    await producer.send(target, value=r.value, key=r.key, partition=tp.partition)
    finally:
        await consumer.stop()
        await producer.stop()


def test_a_dm_across_two_regions_gets_messages_receipts_and_presence_both_ways(
    multi_region_stack: LocalStack,
) -> None:
    """alice is connected in eu-central, bob in us-east (each region's own gateway, Redis and
    relay): every frame that reaches the other one crossed MirrorMaker 2 and a relay."""
    from tests.opsctl.region.conftest import REGIONS

    stack = multi_region_stack
    info = stack.info
    eu, us = REGIONS
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    conv = dm_conversation(alice, bob)

    def token(user: str) -> Callable[[], str]:
        return lambda: make_token(
            info.jwt_secret_file, user, issuer=info.jwt_issuer, audience=info.jwt_audience
        )

    def ws(region: str) -> str:
        return info.region(region).gateway_ws_urls[0]

    def got_receipt(client: ProtocolClient, user: str, seq: int, kind: str) -> bool:
        return any(
            r["user_id"] == user and r["seq"] >= seq and r["kind"] == kind for r in client.receipts
        )

    async def scenario() -> None:
        a = ProtocolClient([ws(eu)], alice, "phone", token(alice), auto_reconnect=False)
        b = ProtocolClient([ws(us)], bob, "laptop", token(bob), auto_reconnect=False)
        try:
            await a.connect()
            watch = await a.request({"op": "presence_subscribe", "users": [bob]})
            assert watch["statuses"] == {bob: "offline"}
            await b.connect()
            # bob's first route in us-east -> its relay -> eu-central's relay -> alice.
            await a.wait_until(lambda: a.presence.get(bob) == "online", 60, "bob online")
            watch = await b.request({"op": "presence_subscribe", "users": [alice]})
            assert watch["statuses"] == {alice: "online"}, "alice is online in eu-central"
            query = await a.request({"op": "presence_query", "users": [bob]})
            assert query["statuses"] == {bob: "online"}

            await a.send("hi bob", to=bob)
            await b.send("hi alice", to=alice)
            for client in (a, b):
                await client.wait_until(
                    lambda c=client: sorted(c.bodies(conv)) == ["hi alice", "hi bob"],
                    60,
                    "both messages",
                )
            top = max(seq for c, seq in b.messages if c == conv)
            assert top == 2

            await b.receipt(conv, top, "delivered")
            await a.wait_until(lambda: got_receipt(a, bob, top, "delivered"), 60, "bob's receipt")
            await a.receipt(conv, top, "read")
            await b.wait_until(lambda: got_receipt(b, alice, top, "read"), 60, "alice's receipt")

            # A new device of alice in eu-central finds bob's receipt in its sync.
            fresh = ProtocolClient([ws(eu)], alice, "tablet", token(alice), auto_reconnect=False)
            await fresh.connect()
            done = next(f for f in reversed(fresh.frames) if f["op"] == "sync_done")
            assert done["receipts"][conv][f"{bob}|laptop|delivered"] == top
            await fresh.close()

            # alice's last device in eu-central goes: bob sees her offline; and back.
            await a.close()
            await b.wait_until(lambda: b.presence.get(alice) == "offline", 60, "alice offline")
            query = await b.request({"op": "presence_query", "users": [alice]})
            assert query["statuses"] == {alice: "offline"}
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_a_group_across_two_regions_gets_messages_and_receipts_both_ways(
    multi_region_stack: LocalStack,
) -> None:
    """alice (eu-central) creates a group with bob (us-east) and carol (eu-central): every
    member gets every message live and bob's receipt reaches alice and carol."""
    from tests.opsctl.region.conftest import REGIONS

    stack = multi_region_stack
    info = stack.info
    eu, us = REGIONS
    tag = uuid.uuid4().hex[:6]
    alice, bob, carol = f"alice-{tag}", f"bob-{tag}", f"carol-{tag}"
    group = f"team-{tag}"
    conv = group_conversation(group)

    def client(user: str, region: str) -> ProtocolClient:
        url = info.region(region).gateway_ws_urls[0]

        def token() -> str:
            return make_token(
                info.jwt_secret_file, user, issuer=info.jwt_issuer, audience=info.jwt_audience
            )

        return ProtocolClient([url], user, "d1", token, auto_reconnect=False)

    async def scenario() -> None:
        a, b, c = client(alice, eu), client(bob, us), client(carol, eu)
        try:
            for member in (a, b, c):
                await member.connect()
            created = await a.request(
                {"op": "group_create", "group_id": group, "members": [bob, carol]}
            )
            assert created["op"] == "group", created
            await a.send("from eu", group=group)
            await b.send("from us", group=group)
            for member in (a, b, c):
                await member.wait_until(
                    lambda m=member: sorted(m.bodies(conv)) == ["from eu", "from us"],
                    60,
                    "both group messages",
                )
            await b.receipt(conv, 2, "read")
            for member in (a, c):
                await member.wait_until(
                    lambda m=member: any(r["user_id"] == bob and r["seq"] == 2 for r in m.receipts),
                    60,
                    "bob's receipt",
                )
        finally:
            for member in (a, b, c):
                await member.close()

    asyncio.run(scenario())


def test_a_member_who_leaves_in_one_region_gets_no_more_messages_in_the_other(
    multi_region_stack: LocalStack,
) -> None:
    """dave has a phone in eu-central and a laptop in us-east; he leaves the group from his
    phone, and a message sent right after (well within the members cache's 60 s) reaches bob in
    us-east but not dave's laptop: the leave dropped us-east's cache of the group through the
    relays (record ``i``), not only eu-central's. The group is homed in eu-central, where the
    change is made: its messages and the change share a partition of eu-central's deliveries
    topic, so us-east's relay applies the change before it routes the message."""
    from gateway.groups import MEMBERS_CACHE_TTL_S
    from gateway.homes import shard_of
    from gateway.shardmap import ShardMap
    from tests.opsctl.region.conftest import REGIONS

    stack = multi_region_stack
    eu, us = REGIONS
    tag = uuid.uuid4().hex[:6]
    alice, bob, dave = f"alice-{tag}", f"bob-{tag}", f"dave-{tag}"
    homes = ShardMap(0, REGIONS)
    group = next(
        g
        for g in (f"left-{tag}-{i}" for i in range(1000))
        if homes.entry(shard_of(group_conversation(g))).home == eu
    )
    conv = group_conversation(group)
    eu_relay = stack.component(f"{eu}/relay").endpoint
    forwarded = 'im_relay_events_forwarded_total{kind="i"}'

    def client(user: str, device: str, region: str) -> ProtocolClient:
        return _region_client(stack, user, device, region)

    async def changes_forwarded() -> float:
        return (await asyncio.to_thread(metrics, eu_relay)).get(forwarded, 0.0)

    async def scenario() -> None:
        a, b = client(alice, "d1", eu), client(bob, "d1", us)
        phone, laptop = client(dave, "phone", eu), client(dave, "laptop", us)
        everyone = (a, b, phone, laptop)
        try:
            for member in everyone:
                await member.connect()
            created = await a.request(
                {"op": "group_create", "group_id": group, "members": [bob, dave]}, timeout=30
            )
            assert created["op"] == "group", created
            # Delivered in us-east by its relay, which cached the members (dave among them).
            await a.send("before", group=group)
            for member in everyone:
                await member.wait_until(
                    lambda m=member: m.bodies(conv) == ["before"], 60, "the first message"
                )

            before = await changes_forwarded()
            left = await phone.request({"op": "group_leave", "group_id": group}, timeout=30)
            leave_at = time.monotonic()
            assert left["op"] == "group", left
            assert dave not in left["members"]
            # eu-central's relay produced the change: the message below follows it.
            deadline = time.monotonic() + 30
            while await changes_forwarded() < before + 1:
                assert time.monotonic() < deadline, "the leave was not forwarded within 30 s"
                await asyncio.sleep(0.1)

            await a.send("after", group=group)
            await b.wait_until(lambda: b.bodies(conv) == ["before", "after"], 60, "bob: after")
            await a.wait_until(lambda: a.bodies(conv) == ["before", "after"], 60, "alice: after")
            # One routing step publishes to every member's gateway at once: a second is ample.
            await asyncio.sleep(2)
            elapsed = time.monotonic() - leave_at
            assert laptop.bodies(conv) == ["before"], "dave's laptop in us-east got a message"
            assert phone.bodies(conv) == ["before"], "dave's phone in eu-central got a message"
            assert elapsed < MEMBERS_CACHE_TTL_S, f"{elapsed:.0f} s: the cache may have expired"
            print(f"leave to the next message routed in both regions: {elapsed:.1f} s")
        finally:
            for member in everyone:
                await member.close()

    asyncio.run(scenario())


def _region_client(stack: LocalStack, user: str, device: str, region: str) -> ProtocolClient:
    info = stack.info

    def token() -> str:
        return make_token(
            info.jwt_secret_file, user, issuer=info.jwt_issuer, audience=info.jwt_audience
        )

    url = info.region(region).gateway_ws_urls[0]
    return ProtocolClient([url], user, device, token, auto_reconnect=False)
