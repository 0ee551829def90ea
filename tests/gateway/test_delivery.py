"""gateway/delivery.py: live deliveries, sync from the recent cache, and the hold between them
(no gap, no duplicate on one connection)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from gateway import state
from gateway.delivery import Deliveries
from gateway.metrics import GatewayMetrics
from gateway.session import Session, SessionTable
from tests.gateway import fakes

pytestmark = pytest.mark.unit

CONV = "dm:alice:bob"


def message(seq: int) -> str:
    return json.dumps({"conversation_id": CONV, "seq": seq}, separators=(",", ":"))


def item(seq: int, *users: str) -> state.DeliveryItem:
    return state.DeliveryItem(list(users), CONV, seq, 0, '{"op":"message",' + message(seq)[1:])


class World:
    def __init__(self, **config: str) -> None:
        self.redis = fakes.FakeRedis()
        self.metrics = GatewayMetrics()
        self.table = SessionTable()
        backends: Any = SimpleNamespace(redis=self.redis, store=SimpleNamespace(ready=False))
        self.deliveries = Deliveries(
            config=fakes.config(**config),
            metrics=self.metrics,
            backends=backends,
            table=self.table,
            outbox=fakes.outbox(),
        )

    def connect(self, user: str, device: str = "d1") -> Session:
        s = fakes.session(user, device)
        self.table.add(s)
        return s

    def history(self, *seqs: int) -> None:
        """Messages of CONV in Redis: counter, recent cache, bob's complete index."""
        self.redis.hashes[state.counter_key(CONV)] = {"seq": str(max(seqs))}
        entries = [state.encode_recent(s, message(s)) for s in seqs]
        self.redis.lists[state.recent_key(CONV)] = entries
        self.redis.sets[state.user_conversations_key("bob")] = {state.COMPLETE, CONV}

    def counter(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


def seqs_of(s: Session) -> list[tuple[str, int]]:
    """('message' | 'sync', seq) in the order the device got them."""
    out: list[tuple[str, int]] = []
    for frame in fakes.ws_of(s).frames():
        if frame["op"] == "message":
            out.append(("message", frame["seq"]))
        elif frame["op"] == "sync_batch":
            out += [("sync", m["seq"]) for m in frame["messages"]]
    return out


def test_live_deliveries_reach_every_device_of_the_users_once() -> None:
    world = World()
    phone, laptop = world.connect("bob", "phone"), world.connect("bob", "laptop")
    other = world.connect("carol")
    world.deliveries.on_delivery([item(1, "bob"), item(2, "bob")])
    world.deliveries.on_delivery([item(2, "bob")])  # a replayed batch
    assert seqs_of(phone) == seqs_of(laptop) == [("message", 1), ("message", 2)]
    assert fakes.ws_of(other).written == []
    assert world.counter("im_gateway_messages_deduplicated_total") == 2
    assert world.counter("im_gateway_messages_delivered_total") == 4


def test_sync_reads_the_cache_after_the_cursor_and_shows_only_others_receipts() -> None:
    async def scenario() -> None:
        world = World()
        world.history(1, 2, 3)
        world.redis.hashes[state.receipts_key(CONV)] = {
            state.receipt_field("alice", "phone", "read"): "3",
            state.receipt_field("bob", "laptop", "read"): "2",
        }
        bob = world.connect("bob")
        await world.deliveries.sync(bob, {CONV: 1}, None, "s1", held=False)
        assert seqs_of(bob) == [("sync", 2), ("sync", 3)]
        done = fakes.ws_of(bob).frames()[-1]
        assert done == {
            "op": "sync_done",
            "conversations": {CONV: {"last_seq": 3, "complete": True}},
            "receipts": {CONV: {"alice|phone|read": 3}},
            "ref": "s1",
        }
        assert world.counter("im_gateway_synced_messages_total", source="cache") == 2

    asyncio.run(scenario())


def test_deliveries_during_a_sync_are_held_then_released_without_duplicates() -> None:
    async def scenario() -> None:
        world = World()
        world.history(1, 2, 3)
        bob = world.connect("bob")
        read_cache = world.redis.lrange

        async def lrange_while_delivering(key: str, start: int, end: int) -> list[str]:
            # Seq 3 is in the cache and routed live too; seq 4 only live.
            world.deliveries.on_delivery([item(3, "bob"), item(4, "bob")])
            return await read_cache(key, start, end)

        world.redis.lrange = lrange_while_delivering  # type: ignore[method-assign]
        await world.deliveries.sync(bob, {CONV: 1}, None, None, held=False)
        assert seqs_of(bob) == [("sync", 2), ("sync", 3), ("message", 4)]
        assert fakes.ws_of(bob).ops() == ["sync_batch", "sync_done", "message"]
        assert (bob.syncing, bob.held) == (0, None)

    asyncio.run(scenario())


def test_too_much_held_during_a_sync_asks_for_another_sync() -> None:
    async def scenario() -> None:
        world = World(send_queue_max="2")
        world.history(1)
        bob = world.connect("bob")
        bob.syncing = 1  # the connect-time sync, counted from hello on
        world.deliveries.on_delivery([item(2, "bob"), item(3, "bob"), item(4, "bob")])
        assert bob.resync
        await world.deliveries.sync(bob, {CONV: 0}, None, None, held=True)
        assert fakes.ws_of(bob).ops() == ["sync_batch", "sync_done", "sync_required"]
        assert fakes.ws_of(bob).frames()[-1]["reason"] == "overflow"

    asyncio.run(scenario())


def test_a_failed_sync_answers_unavailable_and_releases_the_hold() -> None:
    async def scenario() -> None:
        world = World()
        bob = world.connect("bob")
        # bob's conversation index is not in Redis and Cassandra is not connected yet.
        await world.deliveries.sync(bob, {}, None, "s9", held=False)
        error = fakes.ws_of(bob).frames()[-1]
        assert (error["code"], error["ref"]) == ("unavailable", "s9")
        assert bob.syncing == 0
        world.deliveries.on_delivery([item(1, "bob")])
        assert seqs_of(bob) == [("message", 1)]

    asyncio.run(scenario())
