"""After a message is persisted: the Redis caches, the recipients, and the publish to the
gateways that hold a member's session. Shared by the dispatcher (the home region) and the relay
(every other region, docs/multi-region.md section 6), so both apply a message identically.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from gateway import redis_client, state
from gateway.groups import group_members
from gateway.protocol import dm_members
from gateway.sequencer import Gap
from gateway.store import MessageRecord

GROUP_PREFIX = "g:"


async def recipients(
    redis: Any, store: Any, records: Iterable[MessageRecord], extra: Iterable[str] = ()
) -> dict[str, list[str]]:
    """Conversation id -> member user ids (the sender's own devices included), for the
    records' conversations and the ``extra`` conversation ids (e.g. of relayed gaps)."""
    out: dict[str, list[str]] = {}
    convs = dict.fromkeys([*(r.conversation_id for r in records), *extra])
    for conv in convs:
        pair = dm_members(conv)
        if pair is not None:
            out[conv] = list(dict.fromkeys(pair))
        elif conv.startswith(GROUP_PREFIX):
            out[conv] = await group_members(redis, store, conv[len(GROUP_PREFIX) :])
    return out


async def cache(
    redis: Any,
    max_seq: Any,
    records: Sequence[MessageRecord],
    views: Sequence[str],
    new_index: Iterable[tuple[str, str]],
    *,
    size: int,
) -> None:
    """Append to the recent caches (one RPUSH per conversation) and add conversations to
    the users' index sets. Pairs indexed since the last Redis data loss are skipped: the
    sets are rebuilt from Cassandra when they lack their COMPLETE marker."""
    async with redis.pipeline(transaction=False) as pipe:
        if size:
            entries: dict[str, list[str]] = defaultdict(list)
            for record, view in zip(records, views, strict=True):
                entries[record.conversation_id].append(state.encode_recent(record.seq, view))
            for conv, values in entries.items():
                key = state.recent_key(conv)
                pipe.rpush(key, *values)
                pipe.ltrim(key, -size, -1)
                pipe.expire(key, 7 * 86400)
        for user, conv in new_index:
            pipe.sadd(state.user_conversations_key(user), conv)
        # The last persisted seq, a hint that lets sync skip conversations with nothing
        # new. Never the source of a seq.
        last: dict[str, int] = {}
        for record in records:
            last[record.conversation_id] = max(last.get(record.conversation_id, 0), record.seq)
        for conv, seq in last.items():
            redis_client.queue_script(pipe, max_seq, [state.counter_key(conv)], [seq])
        await pipe.execute()


def gap_record(gap: Gap) -> MessageRecord:
    """An in-doubt range as a delivery item at the range's last seq (see ``route``)."""
    now = int(time.time() * 1000)
    return MessageRecord(
        gap.conversation_id, 0, gap.high, "", "", "", "", "gap", None, None, "", now, 0
    )


async def route(
    redis: Any,
    records: list[MessageRecord],
    frames: list[str],
    members: dict[str, list[str]],
    gaps: Sequence[Gap] = (),
) -> tuple[int, int]:
    """Publish each record's frame to every gateway node holding a session of a member.
    Returns (deliveries published, one per user per node; recipients without a route)."""
    from gateway.protocol import gap_frame

    if gaps:
        # A gap travels as a delivery item at the range's last seq, ahead of the first
        # message above it: gateways write it like a message (and a session that already
        # has that seq skips it), clients move their cursor past the range.
        records = [gap_record(g) for g in gaps] + records
        frames = [gap_frame(g.conversation_id, g.low, g.high) for g in gaps] + frames
    users = list({u for conv in {r.conversation_id for r in records} for u in members[conv]})
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.zrangebyscore(state.route_key(user), now, "+inf")
        nodes_per_user = await pipe.execute()
    user_nodes = dict(zip(users, nodes_per_user, strict=True))
    per_node: dict[str, list[state.DeliveryItem]] = defaultdict(list)
    offline = 0
    for record, frame in zip(records, frames, strict=True):
        by_node: dict[str, list[str]] = defaultdict(list)
        for user in members[record.conversation_id]:
            nodes = user_nodes.get(user) or []
            if not nodes:
                offline += 1
            for node in nodes:
                by_node[node].append(user)
        for node, node_users in by_node.items():
            per_node[node].append(
                state.DeliveryItem(
                    node_users, record.conversation_id, record.seq, record.accepted_at, frame
                )
            )
    routed = 0
    if per_node:
        async with redis.pipeline(transaction=False) as pipe:
            for node, items in per_node.items():
                pipe.spublish(state.node_channel(node), state.encode_delivery(items))
                routed += sum(len(item.users) for item in items)
            await pipe.execute()
    return routed, offline
