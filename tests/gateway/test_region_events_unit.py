"""Presence and receipts between regions, the relay's logic (gateway/region_events.py), on a
fake Redis; the real path is tests/gateway/test_multi_region.py's DM across two regions."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from gateway import region_events, state
from gateway.metrics import RelayMetrics
from tests.gateway.fakes import FakeRedis

pytestmark = pytest.mark.unit


class Redis(FakeRedis):
    """Adds what presence needs: route sorted sets, hash writes, publishes."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[str, dict[str, float]] = {}
        self.published: list[tuple[str, str]] = []

    def zcount(self, key: str, low: float, high: str) -> int:
        return sum(1 for expiry in self.routes.get(key, {}).values() if expiry >= low)

    def hset(self, key: str, field: str, value: str) -> int:
        self.hashes.setdefault(key, {})[field] = value
        return 1

    def hdel(self, key: str, field: str) -> int:
        return 1 if self.hashes.get(key, {}).pop(field, None) is not None else 0

    def expire(self, key: str, seconds: int) -> bool:
        return True

    def spublish(self, channel: str, payload: str) -> int:
        self.published.append((channel, payload))
        return 1


def presence(source: str, users: list[str], status: str, ttl: float = 60) -> tuple[str, Any]:
    return source, {"u": users, "s": status, "exp": time.time() + ttl}


def events(redis: Redis) -> list[state.PresenceEvent]:
    return [state.decode_presence(p) for c, p in redis.published if c == state.PRESENCE_CHANNEL]


def test_a_peer_makes_a_user_online_here_once_and_offline_when_it_goes() -> None:
    redis = Redis()
    apply = region_events.apply_presence
    assert asyncio.run(apply(redis, [presence("us-east", ["bob"], "online")])) == 1
    assert events(redis) == [state.PresenceEvent("bob", "online", False, "us-east")]
    assert "us-east" in redis.hashes[state.remote_presence_key("bob")]
    # A refresh of the same: no change, no event.
    assert asyncio.run(apply(redis, [presence("us-east", ["bob"], "online")])) == 0
    assert asyncio.run(apply(redis, [presence("us-east", ["bob"], "offline")])) == 1
    assert events(redis)[-1] == state.PresenceEvent("bob", "offline", False, "us-east")
    assert redis.hashes[state.remote_presence_key("bob")] == {}


def test_a_user_with_a_route_here_sees_no_event_from_a_peer() -> None:
    redis = Redis()
    redis.routes[state.route_key("alice")] = {"gw-1": time.time() + 60}
    updates = [presence("us-east", ["alice"], "online"), presence("us-east", ["alice"], "offline")]
    assert asyncio.run(region_events.apply_presence(redis, updates)) == 0
    assert redis.published == []


def test_an_expired_peer_entry_does_not_count() -> None:
    redis = Redis()
    redis.hashes[state.remote_presence_key("carol")] = {"ap-east": str(time.time() - 5)}
    changed = asyncio.run(
        region_events.apply_presence(redis, [presence("us-east", ["carol"], "online")])
    )
    assert changed == 1, "ap-east's entry had expired: carol was offline here"


def test_the_forwarder_keys_presence_by_region_and_never_forwards_a_peers_change() -> None:
    async def run() -> list[tuple[str, str, bytes]]:
        forwarder = region_events.Forwarder("eu-central", "im.deliveries", 60, RelayMetrics())
        forwarder.on_message(
            state.PRESENCE_CHANNEL, state.encode_presence(state.PresenceEvent("bob", "offline"))
        )
        peer = state.PresenceEvent("dan", "online", False, "us-east")
        forwarder.on_message(state.PRESENCE_CHANNEL, state.encode_presence(peer))
        event = state.ReceiptEvent(["a", "b"], ("b", "d1"), '{"op":"receipt"}')
        receipt = state.RegionReceipt("dm:a:b", "b|d1|read", 3, event)
        forwarder.on_message(state.RECEIPTS_CHANNEL, state.encode_region_receipt(receipt))
        forwarder.on_message(state.RECEIPTS_CHANNEL, "not json")
        return [forwarder.queue.get_nowait() for _ in range(forwarder.queue.qsize())]

    queued = asyncio.run(run())
    assert [(kind, key) for kind, key, _ in queued] == [("p", "eu-central"), ("r", "dm:a:b")]
    record = json.loads(queued[0][2])
    assert (record["t"], record["rg"], record["u"], record["s"]) == (
        "p",
        "eu-central",
        ["bob"],
        "offline",
    )
    receipt_record = state.decode_delivery_record(queued[1][2])
    assert receipt_record is not None
    assert (receipt_record["c"], receipt_record["fd"], receipt_record["s"]) == (
        "dm:a:b",
        "b|d1|read",
        3,
    )
