"""Group membership: Cassandra is the source of truth, Redis a short-lived cache of it.

The race the cache must survive: a reader misses the cache and reads the members from Cassandra;
meanwhile a membership change is written to Cassandra and the cache invalidated; then the
reader writes what it read, which is now stale, and every sender, receipt and sync would use
that set until it expires (MEMBERS_CACHE_TTL_S). So every change bumps the group's generation
(state.members_generation_key) in the same transaction that drops the set, and a reader takes
the generation *before* reading Cassandra and refills only if it is unchanged
(state.REFILL_MEMBERS, checked and written atomically in Redis). A reader that lost the race
still answers with what it read (as it would have a moment earlier); the next reader refills.

Every region caches its own copy (its own Redis): a change also goes out on
state.MEMBERSHIP_CHANNEL, which the region's relay forwards to the peers' relays (record ``i``,
gateway/region_events.py); each drops its region's copy the same way (invalidate_here), so a
leaver stops receiving the group's messages in every region within the replication lag, not
after MEMBERS_CACHE_TTL_S.
"""

from __future__ import annotations

from typing import Any

from gateway import state
from gateway.store import CassandraStore

MEMBERS_CACHE_TTL_S = 60  # bounds staleness if Redis loses an invalidation (a failover)


async def group_members(redis: Any, store: CassandraStore, group_id: str) -> list[str]:
    """Members from the Redis cache, loaded from Cassandra when the cache is not complete."""
    key, gen_key = state.members_key(group_id), state.members_generation_key(group_id)
    # Not a MULTI (redis-py's cluster transactions mishandle these replies) and not needed:
    # only the order matters, the generation read before Cassandra is.
    async with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(key)
        pipe.get(gen_key)
        cached, generation = await pipe.execute()
    if state.COMPLETE in cached:
        return sorted(m for m in cached if m != state.COMPLETE)
    members = await store.members(group_id)  # read after the generation: see the docstring
    await refill(redis, group_id, generation or "0", members)
    return sorted(members)


async def refill(redis: Any, group_id: str, generation: str, members: list[str]) -> bool:
    """Cache ``members`` if the group's generation is still ``generation``; True if cached."""
    keys = (state.members_key(group_id), state.members_generation_key(group_id))
    args = (generation, MEMBERS_CACHE_TTL_S, state.COMPLETE, *members)
    return bool(await redis.eval(state.REFILL_MEMBERS, len(keys), *keys, *args))


async def invalidate(redis: Any, group_id: str) -> None:
    """After a membership change is written to Cassandra: a new generation, no cached set,
    here and (through the relays) in the peer regions."""
    generation = await invalidate_here(redis, group_id)
    change = state.MembershipChange(group_id, generation)
    await redis.spublish(state.MEMBERSHIP_CHANNEL, state.encode_membership(change))


async def invalidate_here(redis: Any, group_id: str) -> int:
    """Drop this region's cached members of the group (a new generation, so a refill read
    before now is not cached); the new generation. Not published: the relay calls it for a
    peer's change, which must not travel back."""
    gen_key = state.members_generation_key(group_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(gen_key)
        pipe.expire(gen_key, state.MEMBERS_GENERATION_TTL_S)
        pipe.delete(state.members_key(group_id))
        generation, _, _ = await pipe.execute()
    await redis.delete(state.legacy_members_key(group_id))
    return int(generation)
