"""Issue 15, the group member cache's generation check (gateway/groups.py), with a fake Redis
whose script call does what state.REFILL_MEMBERS does, and a store the test can pause."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway import groups, state

pytestmark = pytest.mark.unit


class _Pipe:
    def __init__(self, redis: _Redis) -> None:
        self._redis = redis
        self._queued: list[tuple[str, tuple[Any, ...]]] = []

    async def __aenter__(self) -> _Pipe:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self._queued.append((name, args))

    async def execute(self) -> list[Any]:
        return [getattr(self._redis, "do_" + name)(*args) for name, args in self._queued]


class _Redis:
    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.sets: dict[str, set[str]] = {}
        self.ttl: dict[str, int] = {}
        self.published: list[tuple[str, str]] = []

    def pipeline(self, transaction: bool = False) -> _Pipe:
        return _Pipe(self)

    def do_smembers(self, key: str) -> set[str]:
        return set(self.sets.get(key, set()))

    def do_get(self, key: str) -> str | None:
        return self.strings.get(key)

    def do_incr(self, key: str) -> int:
        self.strings[key] = str(int(self.strings.get(key, "0")) + 1)
        return int(self.strings[key])

    def do_expire(self, key: str, seconds: int) -> None:
        self.ttl[key] = seconds

    def do_delete(self, *keys: str) -> None:
        for key in keys:
            self.sets.pop(key, None)
            self.strings.pop(key, None)

    async def delete(self, *keys: str) -> None:
        self.do_delete(*keys)

    async def spublish(self, channel: str, payload: str) -> int:
        self.published.append((channel, payload))
        return 0

    async def eval(self, script: str, numkeys: int, *args: Any) -> int:
        assert script == state.REFILL_MEMBERS
        assert numkeys == 2
        members_key, gen_key, generation, ttl, *members = args
        if self.strings.get(gen_key, "0") != generation:
            return 0
        self.sets[members_key] = set(members)
        self.ttl[members_key] = int(ttl)
        return 1


class _Store:
    """Cassandra's group_members; ``hold`` pauses a read after it has read."""

    def __init__(self, members: list[str]) -> None:
        self.rows = list(members)
        self.reads = 0
        self.hold: asyncio.Event | None = None
        self.read_done = asyncio.Event()

    async def members(self, group_id: str) -> list[str]:
        self.reads += 1
        result = list(self.rows)
        self.read_done.set()
        if self.hold is not None:
            await self.hold.wait()
        return result


def test_a_miss_refills_and_the_next_read_is_served_from_the_cache() -> None:
    redis, store = _Redis(), _Store(["bob", "alice"])

    async def scenario() -> None:
        assert await groups.group_members(redis, store, "g1") == ["alice", "bob"]  # type: ignore[arg-type]
        assert redis.sets[state.members_key("g1")] == {state.COMPLETE, "alice", "bob"}
        assert redis.ttl[state.members_key("g1")] == groups.MEMBERS_CACHE_TTL_S
        assert await groups.group_members(redis, store, "g1") == ["alice", "bob"]  # type: ignore[arg-type]
        assert store.reads == 1

    asyncio.run(scenario())


def test_a_refill_read_before_an_invalidation_is_not_cached() -> None:
    redis, store = _Redis(), _Store(["alice", "bob", "carol"])

    async def scenario() -> None:
        store.hold = asyncio.Event()
        reader = asyncio.create_task(groups.group_members(redis, store, "g1"))  # type: ignore[arg-type]
        await store.read_done.wait()  # the reader has the old membership in hand
        store.rows.remove("carol")  # carol leaves: Cassandra first, then the cache
        await groups.invalidate(redis, "g1")
        store.hold.set()
        # The reader answers with what it read, but does not cache it.
        assert await reader == ["alice", "bob", "carol"]
        assert state.members_key("g1") not in redis.sets
        store.hold = None
        assert await groups.group_members(redis, store, "g1") == ["alice", "bob"]  # type: ignore[arg-type]
        assert redis.sets[state.members_key("g1")] == {state.COMPLETE, "alice", "bob"}

    asyncio.run(scenario())


def test_invalidate_bumps_the_generation_and_drops_both_cache_keys() -> None:
    redis = _Redis()
    redis.sets[state.members_key("g1")] = {state.COMPLETE, "alice"}
    redis.sets[state.legacy_members_key("g1")] = {state.COMPLETE, "alice"}

    async def scenario() -> None:
        await groups.invalidate(redis, "g1")
        await groups.invalidate(redis, "g1")

    asyncio.run(scenario())
    gen_key = state.members_generation_key("g1")
    assert redis.strings[gen_key] == "2"
    assert redis.ttl[gen_key] == state.MEMBERS_GENERATION_TTL_S
    assert not redis.sets
    # Both keys of one group are in one Redis Cluster slot (the refill script touches both).
    assert state.members_key("g1").endswith("{g1}")
    assert gen_key.endswith("{g1}")


def test_invalidate_tells_the_peer_regions_and_invalidate_here_does_not() -> None:
    redis = _Redis()

    async def scenario() -> int:
        await groups.invalidate(redis, "g1")
        await groups.invalidate(redis, "g1")
        return await groups.invalidate_here(redis, "g1")  # a peer's change, applied here

    assert asyncio.run(scenario()) == 3
    assert redis.published == [
        (state.MEMBERSHIP_CHANNEL, '{"g":"g1","gen":1}'),
        (state.MEMBERSHIP_CHANNEL, '{"g":"g1","gen":2}'),
    ], "the relay's own invalidation is never published (it would travel back)"
    assert state.decode_membership(redis.published[1][1]) == state.MembershipChange("g1", 2)


def test_a_refill_read_before_a_peers_change_arrived_is_not_cached() -> None:
    """The race of the generation check, with the change made in another region: the relay's
    invalidate_here bumps this region's generation as a local change does."""
    redis, store = _Redis(), _Store(["alice", "bob", "dave"])

    async def scenario() -> None:
        store.hold = asyncio.Event()
        reader = asyncio.create_task(groups.group_members(redis, store, "g1"))  # type: ignore[arg-type]
        await store.read_done.wait()
        store.rows.remove("dave")  # dave left in the other region; replicated here
        await groups.invalidate_here(redis, "g1")
        store.hold.set()
        assert await reader == ["alice", "bob", "dave"]
        assert state.members_key("g1") not in redis.sets, "the stale read was not cached"
        store.hold = None
        assert await groups.group_members(redis, store, "g1") == ["alice", "bob"]  # type: ignore[arg-type]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "payload", ['{"gen":1}', '{"g":"","gen":1}', '{"g":7,"gen":1}', '{"g":"g1"}', "nope"]
)
def test_a_malformed_membership_payload_is_refused(payload: str) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        state.decode_membership(payload)
