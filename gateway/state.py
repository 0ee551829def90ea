"""Redis key layout, pub/sub channels and the Lua scripts shared by the gateway and dispatcher.

Redis is a cache and a router, never the only copy of anything durable: everything here can be
rebuilt from Cassandra or is refreshed by heartbeats (see docs/protocol.md, "Data path").
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from gateway.protocol import encode

PREFIX = "im:"

# A set that is complete (loaded from Cassandra, then kept up to date) holds this member.
COMPLETE = "*"

# Pub/sub ---------------------------------------------------------------------------------------
# Every payload is one compact JSON text (protocol.encode: no spaces, UTF-8 kept as is). The
# dispatcher and the gateways of one region may run different versions during a rollout: add
# fields, never reorder or remove them.

# Presence changes for all gateways: PresenceEvent.
PRESENCE_CHANNEL = PREFIX + "presence"

# Receipts this region's gateways accepted, for the relay to forward to the peer regions
# (multi-region stacks only): RegionReceipt.
RECEIPTS_CHANNEL = PREFIX + "receipts"

# Group membership changes made through this region's gateways, for the relay to forward to the
# peer regions, whose members caches must drop the group too (docs/multi-region.md 6):
# MembershipChange. Published on every change; nobody listens in a one-region stack.
MEMBERSHIP_CHANNEL = PREFIX + "membership"


def node_channel(node_id: str) -> str:
    """Deliveries (from the dispatcher) and receipt events (from gateways) for one gateway node:
    a Delivery or a ReceiptEvent."""
    return f"{PREFIX}gw:{node_id}"


class DeliveryItem(NamedTuple):
    """One message for the sessions of ``users`` on the node; a JSON array in this order."""

    users: list[str]  # recipients with a route to this node (the sender's own devices too)
    conversation_id: str
    seq: int
    accepted_at: int  # ms since the epoch, the gateway's accept time (for the latency metric)
    frame: str  # the encoded ``message`` frame, written to the sockets as it is


class Delivery(NamedTuple):
    """Node channel, ``{"t":"d","items":[<DeliveryItem>, ...]}``: a dispatcher batch's
    messages for one node."""

    items: list[DeliveryItem]


class ReceiptEvent(NamedTuple):
    """Node channel, ``{"t":"r","u":[<user>, ...],"skip":[<user>,<device>],"f":<frame>}``: a
    receipt for every device of ``users`` on the node except the one that sent it."""

    users: list[str]  # "u": the conversation's members
    skip: tuple[str, str] | None  # "skip": the user and device the receipt came from
    frame: str  # "f": the encoded ``receipt`` frame


class PresenceEvent(NamedTuple):
    """Presence channel, ``{"u":<user>,"s":"online"|"offline"}``: the user's first route in
    this region appeared or their last one went away. Multi-region additions (absent when
    false/empty): ``"q":1`` (quiet: the user stays online in another region, watchers see no
    change; the relay still forwards it), ``"rg":<region>`` (published by the relay: another
    region's change made the user's status change here; never forwarded back)."""

    user: str
    status: str
    quiet: bool = False
    region: str = ""


class RegionReceipt(NamedTuple):
    """Receipts channel, ``{"c":<conversation>,"fd":<receipt field>,"s":<seq>,"e":<event>}``
    with the ReceiptEvent encoded as on the node channels: for the relay to forward."""

    conversation_id: str
    field: str  # receipt_field(user, device, kind)
    seq: int
    event: ReceiptEvent


def encode_delivery(items: list[DeliveryItem]) -> str:
    return encode({"t": "d", "items": items})  # a NamedTuple encodes as a JSON array


def encode_receipt_event(event: ReceiptEvent) -> str:
    return encode({"t": "r", "u": event.users, "skip": event.skip, "f": event.frame})


def decode_node_message(data: str) -> Delivery | ReceiptEvent | None:
    """A node channel payload; None for a kind this version does not know (a newer sender's).
    Raises ValueError, KeyError or TypeError when the payload is malformed."""
    payload: dict[str, Any] = json.loads(data)
    kind = payload["t"]
    if kind == "d":
        return Delivery([DeliveryItem._make(item) for item in payload["items"]])
    if kind == "r":
        skip = payload.get("skip")
        return ReceiptEvent(payload["u"], (skip[0], skip[1]) if skip else None, payload["f"])
    return None


def encode_presence(event: PresenceEvent) -> str:
    payload: dict[str, Any] = {"u": event.user, "s": event.status}
    if event.quiet:
        payload["q"] = 1
    if event.region:
        payload["rg"] = event.region
    return encode(payload)


def decode_presence(data: str) -> PresenceEvent:
    payload: dict[str, Any] = json.loads(data)
    return PresenceEvent(
        payload["u"], payload["s"], bool(payload.get("q")), str(payload.get("rg") or "")
    )


def encode_region_receipt(receipt: RegionReceipt) -> str:
    event = encode_receipt_event(receipt.event)
    return encode({"c": receipt.conversation_id, "fd": receipt.field, "s": receipt.seq, "e": event})


def decode_region_receipt(data: str) -> RegionReceipt:
    payload: dict[str, Any] = json.loads(data)
    event = decode_node_message(payload["e"])
    if not isinstance(event, ReceiptEvent):
        raise ValueError("not a receipt event")
    return RegionReceipt(str(payload["c"]), str(payload["fd"]), int(payload["s"]), event)


class MembershipChange(NamedTuple):
    """Membership channel, ``{"g":<group>,"gen":<generation>}``: the group's membership changed
    here; ``gen`` is this region's new members_generation_key value (for logs: every region
    counts its own generations, a peer bumps its own)."""

    group_id: str
    generation: int


def encode_membership(change: MembershipChange) -> str:
    return encode({"g": change.group_id, "gen": change.generation})


def decode_membership(data: str) -> MembershipChange:
    """Raises ValueError, KeyError or TypeError when the payload is malformed."""
    payload: dict[str, Any] = json.loads(data)
    group_id = payload["g"]
    if not isinstance(group_id, str) or not group_id:
        raise ValueError("no group id")
    return MembershipChange(group_id, int(payload["gen"]))


# The deliveries topic (Kafka, home -> peers' relays, docs/protocol.md section 8) -------------
# One compact JSON object per record, "v": 1, "t": its kind, "rg": the producing region:
#   "m": a persisted message, "m": [the messages table's columns in MESSAGE_COLUMNS order]
#   "g": an announced in-doubt range, "c": conversation, "lo"/"hi": its ends
#   "b": a beacon, "ts": its send time in ms (replication lag)
#   "r": a receipt, "c", "fd", "s", "e" as in RegionReceipt (produced by the relay)
#   "p": presence of users in the producing region: "u": [users], "s": "online"|"offline",
#        "exp": until when (epoch s) an "online" holds unless refreshed (produced by the relay)
#   "i": a group's membership changed in the producing region, "g": group, "gen": its
#        generation there; peers drop their members cache of it (produced by the relay)
# Readers skip kinds they do not know (add kinds, never change one).

DELIVERY_SCHEMA = 1


def encode_delivery_record(kind: str, region: str, **fields: Any) -> bytes:
    return encode({"v": DELIVERY_SCHEMA, "t": kind, "rg": region, **fields}).encode()


def decode_delivery_record(value: bytes) -> dict[str, Any] | None:
    """The record as a dict with "t" and "rg"; None for another schema version or a record that
    is not a JSON object with both (callers count and skip those)."""
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("v") != DELIVERY_SCHEMA:
        return None
    if not isinstance(data.get("t"), str) or not isinstance(data.get("rg"), str):
        return None
    return data


# Keys ------------------------------------------------------------------------------------------


class DedupClaim(NamedTuple):
    """Value of a dedup key, '<state>|<conversation>|<accepted_at_ms>'."""

    state: str  # CLAIMED: accepted, not known durable yet; DURABLE: in Kafka and acknowledged
    conversation_id: str
    accepted_at: int


CLAIMED = "p"
DURABLE = "a"


def dedup_key(user_id: str, client_msg_id: str) -> str:
    """Gateway dedup of client sends. Value: a DedupClaim."""
    return f"{PREFIX}dd:{user_id}:{client_msg_id}"


def encode_dedup(claim: DedupClaim) -> str:
    return f"{claim.state}|{claim.conversation_id}|{claim.accepted_at}"


def decode_dedup(value: str) -> DedupClaim:
    state, conversation_id, accepted_at = value.split("|")
    return DedupClaim(state, conversation_id, int(accepted_at))


def counter_key(conversation_id: str) -> str:
    """Hash {seq}: the last persisted seq, a hint for sync (MAX_SEQ keeps it from going down).
    Seqs are never assigned from it: they come from the fenced blocks in Cassandra."""
    return f"{PREFIX}cs:{{{conversation_id}}}"


def recent_key(conversation_id: str) -> str:
    """List of the newest messages, oldest first: the first-level sync cache. Entries:
    '<seq>|<client JSON>' (encode_recent); a replayed batch may repeat a seq."""
    return f"{PREFIX}rc:{{{conversation_id}}}"


def encode_recent(seq: int, view: str) -> str:
    return f"{seq}|{view}"


def decode_recent(entry: str) -> tuple[int, str]:
    """(seq, client JSON) of a recent-cache entry."""
    seq, view = entry.split("|", 1)
    return int(seq), view


def user_conversations_key(user_id: str) -> str:
    return f"{PREFIX}uc:{user_id}"


def route_key(user_id: str) -> str:
    """Sorted set: gateway node id -> expiry (epoch s). Refreshed by gateway heartbeats."""
    return f"{PREFIX}rt:{user_id}"


def remote_presence_key(user_id: str) -> str:
    """Hash: region -> expiry (epoch s) for the other regions where the user has a route;
    written by this region's relay (docs/multi-region.md 6). Online while any region lists
    the user: a route here, or an unexpired entry."""
    return f"{PREFIX}pr:{user_id}"


def online_elsewhere(expiries: list[str] | None, now: float) -> bool:
    """Whether a remote_presence_key's values hold an unexpired entry."""
    return any(float(value) > now for value in expiries or ())


def members_key(group_id: str) -> str:
    """Set of a group's members plus COMPLETE: a cache of Cassandra's group_members, refilled
    only through REFILL_MEMBERS. Hash-tagged with members_generation_key (one slot: the script
    touches both)."""
    return f"{PREFIX}gm:{{{group_id}}}"


def legacy_members_key(group_id: str) -> str:
    """The members cache before the generation check (untagged): still deleted on every
    membership change, so gateways of the previous version do not serve a stale set during a
    rollout. Drop once no version reading it runs."""
    return f"{PREFIX}gm:{group_id}"


def members_generation_key(group_id: str) -> str:
    """String, a decimal counter: the group's membership generation, INCRed on every membership
    change (gateway/groups.py). Absent reads as "0". Expires MEMBERS_GENERATION_TTL_S after the
    last change; a refill takes milliseconds, so an expiry never meets a refill in flight."""
    return f"{PREFIX}gg:{{{group_id}}}"


MEMBERS_GENERATION_TTL_S = 86400


def receipts_key(conversation_id: str) -> str:
    """Hash receipt_field(user, device, kind) -> highest seq acknowledged. sync_done shows
    clients the fields as they are."""
    return f"{PREFIX}rcpt:{{{conversation_id}}}"


def receipt_field(user_id: str, device_id: str, kind: str) -> str:
    return f"{user_id}|{device_id}|{kind}"


def receipt_field_user(field: str) -> str:
    return field.split("|", 1)[0]


# KEYS: counter hash.  ARGV: seq.  Raises the last persisted seq hint to seq (never lowers it).
MAX_SEQ = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1])
end
return 1
"""

# KEYS: receipts hash.  ARGV: field, seq.  Keeps the maximum; returns 1 when it moved forward.
MAX_RECEIPT = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if seq > cur then
  redis.call('HSET', KEYS[1], ARGV[1], seq)
  return 1
end
return 0
"""

# KEYS: members set, generation key.  ARGV: the generation read before Cassandra was read, the
# set's TTL in s, then the members (COMPLETE among them). Writes the set only while the
# generation is still the one read; returns 1 if written, 0 if a membership change came between
# (the caller's result is then possibly stale and not cached).
REFILL_MEMBERS = """
local gen = redis.call('GET', KEYS[2]) or '0'
if gen ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SADD', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
