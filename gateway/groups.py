"""Group membership: Cassandra is the source of truth, Redis a short-lived cache of it."""

from __future__ import annotations

from typing import Any

from gateway import state
from gateway.store import CassandraStore

MEMBERS_CACHE_TTL_S = 60  # bounds staleness if a reload races a membership change


async def group_members(redis: Any, store: CassandraStore, group_id: str) -> list[str]:
    """Members from the Redis cache, loaded from Cassandra when the cache is not complete."""
    key = state.members_key(group_id)
    cached = await redis.smembers(key)
    if state.COMPLETE in cached:
        return sorted(m for m in cached if m != state.COMPLETE)
    members = await store.members(group_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.sadd(key, state.COMPLETE, *members)
        pipe.expire(key, MEMBERS_CACHE_TTL_S)
        await pipe.execute()
    return sorted(members)


async def invalidate(redis: Any, group_id: str) -> None:
    await redis.delete(state.members_key(group_id))
