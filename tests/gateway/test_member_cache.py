"""Issue 15, the group member cache against the real Redis and Cassandra of the local stack: a
refill that read Cassandra before a membership change and writes after its invalidation is
dropped (the generation check, gateway/groups.py), so the next read sees the change at once
instead of the stale set for up to a minute. The interleaving is made deterministic by pausing
the reader between its Cassandra read and its refill."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from gateway import groups, state
from gateway.store import CassandraStore
from tests.gateway.conftest import Im

pytestmark = pytest.mark.integration


class _PausingStore(CassandraStore):
    """The real store; ``members`` waits on ``hold`` after reading, when one is set."""

    hold: asyncio.Event | None = None
    read_done: asyncio.Event | None = None

    async def members(self, group_id: str) -> list[str]:
        rows = await super().members(group_id)
        if self.hold is not None and self.read_done is not None:
            self.read_done.set()
            await self.hold.wait()
        return rows


def test_a_stale_refill_after_an_invalidation_is_not_cached(im: Im) -> None:
    info = im.stack.info
    gid = im.uid("cache-race")
    alice, bob, carol = im.uid("alice"), im.uid("bob"), im.uid("carol")
    store = _PausingStore(
        [(info.cassandra_host, info.cassandra_port)],
        info.cassandra_keyspace,
        86400,
        im.stack.cassandra_auth(),
    )
    store.connect()

    async def scenario() -> None:
        redis = aioredis.from_url(info.redis_url, decode_responses=True, **im.stack.redis_kwargs())
        try:
            assert await store.create_group(gid, alice, [bob, carol])
            store.hold, store.read_done = asyncio.Event(), asyncio.Event()
            reader = asyncio.create_task(groups.group_members(redis, store, gid))
            await asyncio.wait_for(store.read_done.wait(), 10)  # read: alice, bob, carol
            await store.remove_member(gid, carol)  # carol leaves, as group_leave does it
            await groups.invalidate(redis, gid)
            store.hold.set()
            assert await reader == sorted([alice, bob, carol])  # answered with what it read
            store.hold = store.read_done = None
            # Not cached: the next read goes to Cassandra and sees the leave.
            assert await groups.group_members(redis, store, gid) == sorted([alice, bob])
            cached = await redis.smembers(state.members_key(gid))
            assert cached == {state.COMPLETE, alice, bob}
            generation = state.members_generation_key(gid)
            assert await redis.get(generation) == "1"
            ttl = await redis.ttl(generation)
            assert 0 < ttl <= state.MEMBERS_GENERATION_TTL_S

            # A refill whose generation is still current is cached, and then served.
            await store.add_member(gid, carol)
            await groups.invalidate(redis, gid)
            assert await groups.group_members(redis, store, gid) == sorted([alice, bob, carol])
            await store.remove_member(gid, carol)  # behind the cache's back: still served
            assert await groups.group_members(redis, store, gid) == sorted([alice, bob, carol])
        finally:
            await redis.aclose()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
