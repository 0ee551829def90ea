"""Presence, receipts and membership changes between regions, the relay's logic
(gateway/region_events.py), on a fake Redis; the real paths are tests/gateway/
test_multi_region.py's DM and groups across two regions."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from gateway import region_events, state
from gateway.metrics import RelayMetrics
from tests.gateway.fakes import FakeRedis
from tests.gateway.test_groups_unit import _Redis as MembersRedis

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


def test_the_forwarder_keys_a_membership_change_by_the_groups_conversation() -> None:
    async def run() -> list[tuple[str, str, bytes]]:
        forwarder = region_events.Forwarder("eu-central", "im.deliveries", 60, RelayMetrics())
        change = state.MembershipChange("team", 4)
        forwarder.on_message(state.MEMBERSHIP_CHANNEL, state.encode_membership(change))
        forwarder.on_message(state.MEMBERSHIP_CHANNEL, '{"gen":5}')  # no group: dropped
        return [forwarder.queue.get_nowait() for _ in range(forwarder.queue.qsize())]

    ((kind, key, value),) = asyncio.run(run())
    # The same key as the group's messages: the same partition, so the change reaches a peer
    # before a message the home produced after it.
    assert (kind, key) == ("i", "g:team")
    record = state.decode_delivery_record(value)
    assert record is not None
    assert (record["t"], record["rg"], record["g"], record["gen"]) == ("i", "eu-central", "team", 4)
    assert region_events.membership_group(record) == "team"


@pytest.mark.parametrize("record", [{}, {"g": ""}, {"g": 3}, {"g": None}])
def test_a_membership_record_without_a_group_is_refused(record: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="no group id"):
        region_events.membership_group(record)


def test_a_peers_membership_change_drops_the_cache_here_once_per_group_without_echo() -> None:
    redis = MembersRedis()
    for gid in ("team", "other"):
        redis.sets[state.members_key(gid)] = {state.COMPLETE, "alice", "dave"}
    redis.sets[state.legacy_members_key("team")] = {state.COMPLETE, "alice", "dave"}
    redis.strings[state.members_generation_key("team")] = "7"

    applied = asyncio.run(region_events.apply_membership(redis, ["team", "team"]))

    assert applied == 1
    assert state.members_key("team") not in redis.sets
    assert state.legacy_members_key("team") not in redis.sets
    assert redis.strings[state.members_generation_key("team")] == "8", "this region's own count"
    assert state.members_key("other") in redis.sets, "another group's cache is left alone"
    assert redis.published == [], "a peer's change is never published (it would travel back)"
