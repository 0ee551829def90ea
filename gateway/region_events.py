"""Receipts, presence and group membership changes across regions (docs/multi-region.md
section 6), the relay's half.

Out: the relay subscribes to its region's presence channel (the gateways' first-route and
last-route events) and receipts channel (every receipt a gateway here accepted) and produces
them to its own region's deliveries topic as records of kind ``p`` and ``r``; MirrorMaker 2
mirrors them with the messages and beacons. Every ``route_ttl_s / 3`` it also produces the
users that have a route here (a scan of the route keys): a peer's entry for a user expires
after ``route_ttl_s`` unless refreshed, so an event lost while the relay was away, or a
region that died without an ``offline``, heals by itself.

In: a peer's relay applies them: a receipt is stored like a local one (maximum per field in
state.receipts_key, so order does not matter) and, when it moved, published to the local
gateways of the conversation's members; presence updates state.remote_presence_key (region
-> expiry), and when that changes whether the user is online here (a route here, or another
region), publishes a presence event marked with the source region, which the local relay
never forwards back.

Membership changes take the same path (channel state.MEMBERSHIP_CHANNEL, record ``i``, keyed
by the group's conversation): a peer's relay drops its region's members cache of the group
(groups.invalidate_here) before routing the messages of the same batch, and once more
MEMBERSHIP_REPEAT_S later, for a Cassandra DC that had not yet received the change when the
record arrived (a reader refilling from it in between would cache the old members).

Pub/sub loses what is published while nobody listens: after its subscription comes back, the
relay refreshes presence at once; a lost receipt is repaired by the device's next receipt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from gateway import groups, redis_client, state
from gateway.metrics import RelayMetrics
from gateway.protocol import group_conversation
from gateway.runtime import backoff

log = logging.getLogger("gateway.relay")

FORWARD_QUEUE_MAX = 10_000  # events waiting to be produced; more are dropped (counted)
PRESENCE_CHUNK = 500  # users per presence record
# A peer's membership change is applied again this long after its record: cross-DC Cassandra
# replication is normally well under it; a DC later than that leaves a stale cache until
# groups.MEMBERS_CACHE_TTL_S, as a lost invalidation would.
MEMBERSHIP_REPEAT_S = 5.0


class Forwarder:
    """This region's receipts and presence changes, from Redis pub/sub to the deliveries topic."""

    def __init__(self, region: str, topic: str, route_ttl_s: int, metrics: RelayMetrics) -> None:
        self.region = region
        self.topic = topic
        self.ttl_s = route_ttl_s
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue(FORWARD_QUEUE_MAX)
        self.resubscribed = asyncio.Event()
        # Users whose offline event came while a refresh was scanning: the scan may still list
        # them, and its record would follow the offline one.
        self._gone_during_scan: set[str] = set()

    def on_message(self, channel: str, data: str) -> None:
        try:
            if channel == state.PRESENCE_CHANNEL:
                event = state.decode_presence(data)
                if event.region:
                    return  # a peer's change, published here by this relay
                if event.status == "offline":
                    self._gone_during_scan.add(event.user)
                # Keyed by the region, as the refreshes: one partition, so a refresh never
                # overtakes a later offline.
                item = ("p", self.region, self._presence([event.user], event.status))
            elif channel == state.MEMBERSHIP_CHANNEL:
                change = state.decode_membership(data)
                value = state.encode_delivery_record(
                    "i", self.region, g=change.group_id, gen=change.generation
                )
                # Keyed as the group's messages: the same partition, so a message the home
                # produces after the change reaches the peers after it.
                item = ("i", group_conversation(change.group_id), value)
            else:
                receipt = state.decode_region_receipt(data)
                value = state.encode_delivery_record(
                    "r",
                    self.region,
                    c=receipt.conversation_id,
                    fd=receipt.field,
                    s=receipt.seq,
                    e=state.encode_receipt_event(receipt.event),
                )
                item = ("r", receipt.conversation_id, value)
        except (KeyError, TypeError, ValueError):
            log.warning("bad payload on %s: %.200s", channel, data)
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.metrics.events_dropped.inc()

    def _presence(self, users: list[str], status: str) -> bytes:
        expiry = time.time() + self.ttl_s
        return state.encode_delivery_record("p", self.region, u=users, s=status, exp=expiry)

    async def subscribe_loop(self, redis: Any, stopping: asyncio.Event) -> None:
        attempt = 0
        while not stopping.is_set():
            channels = [state.PRESENCE_CHANNEL, state.RECEIPTS_CHANNEL, state.MEMBERSHIP_CHANNEL]
            subscription = redis_client.Subscription(redis, channels)
            try:
                await subscription.open()
                attempt = 0
                self.resubscribed.set()  # events may have been lost: refresh presence now
                await subscription.run(self.on_message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis pub/sub lost (receipts, presence, membership): %r", exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
            finally:
                await subscription.aclose()

    async def produce_loop(self, producer: Any) -> None:
        while True:
            kind, key, value = await self.queue.get()
            try:
                await producer.send(self.topic, value=value, key=key.encode())
                self.metrics.events_forwarded.labels(kind).inc()
            except Exception as exc:
                log.warning("%s event not forwarded: %r", kind, exc)
                self.metrics.events_dropped.inc()

    async def refresh_loop(self, redis: Any, stopping: asyncio.Event) -> None:
        """Every route_ttl_s / 3 (and at once after a resubscription): who is online here."""
        period = self.ttl_s / 3
        while not stopping.is_set():
            try:
                self._gone_during_scan.clear()
                scanned = await online_here(redis)
                users = [u for u in scanned if u not in self._gone_during_scan]
                for start in range(0, len(users), PRESENCE_CHUNK):
                    chunk = users[start : start + PRESENCE_CHUNK]
                    self.queue.put_nowait(("p", self.region, self._presence(chunk, "online")))
            except asyncio.QueueFull:
                self.metrics.events_dropped.inc()
            except Exception as exc:
                log.warning("presence refresh failed: %r", exc)
            self.resubscribed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.resubscribed.wait(), period)


async def online_here(redis: Any) -> list[str]:
    """Users with an unexpired route in this region."""
    prefix = state.route_key("")
    keys = [key async for key in redis.scan_iter(match=prefix + "*", count=1000)]
    if not keys:
        return []
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.zcount(key, now, "+inf")
        counts = await pipe.execute()
    return [str(k)[len(prefix) :] for k, c in zip(keys, counts, strict=True) if c]


async def _nodes(redis: Any, users: Sequence[str]) -> set[str]:
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.zrangebyscore(state.route_key(user), now, "+inf")
        found = await pipe.execute()
    return {node for nodes in found for node in nodes}


async def apply_receipts(
    redis: Any, max_receipt: Any, receipts: Sequence[tuple[str, dict[str, Any]]]
) -> int:
    """Store peers' receipts (source region, record); publish those that moved to the local
    gateways of the conversation's members. Returns how many moved."""
    moved = 0
    for _source, data in receipts:
        conv, field, seq = str(data["c"]), str(data["fd"]), int(data["s"])
        event = state.decode_node_message(str(data["e"]))
        if not isinstance(event, state.ReceiptEvent):
            continue
        if not await max_receipt(keys=[state.receipts_key(conv)], args=[field, seq]):
            continue
        moved += 1
        nodes = await _nodes(redis, event.users)
        if nodes:
            payload = state.encode_receipt_event(event)
            async with redis.pipeline(transaction=False) as pipe:
                for node in nodes:
                    pipe.spublish(state.node_channel(node), payload)
                await pipe.execute()
    return moved


async def apply_presence(redis: Any, updates: Sequence[tuple[str, dict[str, Any]]]) -> int:
    """Record peers' presence (source region, record) in remote_presence_key; publish an event
    for every user whose status here changed. Returns the number of such changes."""
    now = time.time()
    changes: dict[str, tuple[str, dict[str, float | None]]] = {}  # user -> (source, field)
    for source, data in updates:
        online = data["s"] == "online"
        expiry = float(data.get("exp") or 0)
        for user in data["u"]:
            _, fields = changes.setdefault(str(user), (source, {}))
            fields[source] = expiry if online else None
            changes[str(user)] = (source, fields)
    if not changes:
        return 0
    users = list(changes)
    async with redis.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.zcount(state.route_key(user), now, "+inf")
            pipe.hgetall(state.remote_presence_key(user))
        answers = await pipe.execute()
    changed = 0
    async with redis.pipeline(transaction=False) as pipe:
        for i, user in enumerate(users):
            here, stored = answers[2 * i], answers[2 * i + 1]
            remote = {str(k): float(v) for k, v in stored.items()}
            before = bool(here) or any(exp > now for exp in remote.values())
            source, fields = changes[user]
            key = state.remote_presence_key(user)
            for region, until in fields.items():
                if until is None:
                    remote.pop(region, None)
                    pipe.hdel(key, region)
                else:
                    remote[region] = until
                    pipe.hset(key, region, str(until))
            if remote:
                pipe.expire(key, max(1, int(max(remote.values()) - now) + 1))
            after = bool(here) or any(exp > now for exp in remote.values())
            if before != after:
                status = "online" if after else "offline"
                event = state.PresenceEvent(user, status, False, source)
                pipe.spublish(state.PRESENCE_CHANNEL, state.encode_presence(event))
                changed += 1
        await pipe.execute()
    return changed


def membership_group(data: dict[str, Any]) -> str:
    """The group of a peer's membership record (kind ``i``). Raises ValueError without one (the
    relay counts it skipped, as any undecodable record)."""
    group_id = data.get("g")
    if not isinstance(group_id, str) or not group_id:
        raise ValueError("no group id")
    return group_id


async def apply_membership(redis: Any, group_ids: Sequence[str]) -> int:
    """Drop this region's members cache of each group (a peer changed its membership); the
    number of groups. Idempotent: a repeat only costs the next reader a Cassandra read."""
    unique = list(dict.fromkeys(group_ids))
    for group_id in unique:
        await groups.invalidate_here(redis, group_id)
    return len(unique)
