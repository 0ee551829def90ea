"""The pub/sub payloads and Redis values of gateway/state.py, pinned byte for byte: gateways and
dispatchers of different versions meet on these during a rollout."""

from __future__ import annotations

import pytest

from gateway import state
from gateway.protocol import encode

pytestmark = pytest.mark.unit

MESSAGE = '{"op":"message","seq":7,"body":"hé"}'


def test_delivery_bytes_are_pinned() -> None:
    items = [
        state.DeliveryItem(["alice", "bob"], "dm:alice:bob", 7, 1764170000123, MESSAGE),
        state.DeliveryItem(["carol"], "g:team", 3, 1764170000456, "{}"),
    ]
    wire = state.encode_delivery(items)
    assert wire == (
        r'{"t":"d","items":[[["alice","bob"],"dm:alice:bob",7,1764170000123,'
        r'"{\"op\":\"message\",\"seq\":7,\"body\":\"hé\"}"],'
        r'[["carol"],"g:team",3,1764170000456,"{}"]]}'
    )
    assert state.decode_node_message(wire) == state.Delivery(items)


def test_delivery_is_what_the_dispatcher_published_before_the_types() -> None:
    item = ["u1"], "dm:u1:u2", 1, 5, "{}"
    legacy = encode({"t": "d", "items": [list(item)]})
    assert state.encode_delivery([state.DeliveryItem(*item)]) == legacy
    assert legacy == '{"t":"d","items":[[["u1"],"dm:u1:u2",1,5,"{}"]]}'


def test_receipt_event_bytes_are_pinned() -> None:
    event = state.ReceiptEvent(["alice", "bob"], ("bob", "laptop"), '{"op":"receipt"}')
    wire = state.encode_receipt_event(event)
    assert wire == (
        '{"t":"r","u":["alice","bob"],"skip":["bob","laptop"],"f":"{\\"op\\":\\"receipt\\"}"}'
    )
    assert state.decode_node_message(wire) == event


def test_receipt_event_without_skip_reaches_every_device() -> None:
    decoded = state.decode_node_message('{"t":"r","u":["a"],"f":"{}"}')
    assert decoded == state.ReceiptEvent(["a"], None, "{}")


def test_unknown_node_message_kinds_are_skipped_and_malformed_ones_raise() -> None:
    assert state.decode_node_message('{"t":"x","future":1}') is None
    for bad in ('{"items":[]}', "not json", '{"t":"d","items":[[1,2]]}'):
        with pytest.raises((ValueError, KeyError, TypeError)):
            state.decode_node_message(bad)


def test_presence_event_bytes_are_pinned() -> None:
    event = state.PresenceEvent("alice", "online")
    assert state.encode_presence(event) == '{"u":"alice","s":"online"}'
    assert state.decode_presence('{"u":"bob","s":"offline"}') == ("bob", "offline", False, "")
    # Multi-region additions, present only when set (docs/multi-region.md 6).
    quiet = state.PresenceEvent("alice", "offline", True, "us-east")
    assert state.encode_presence(quiet) == '{"u":"alice","s":"offline","q":1,"rg":"us-east"}'
    assert state.decode_presence(state.encode_presence(quiet)) == quiet


def test_a_region_receipt_round_trips() -> None:
    event = state.ReceiptEvent(["alice", "bob"], ("bob", "laptop"), '{"op":"receipt"}')
    receipt = state.RegionReceipt("dm:alice:bob", "bob|laptop|read", 7, event)
    assert state.decode_region_receipt(state.encode_region_receipt(receipt)) == receipt


def test_dedup_value_round_trip() -> None:
    claim = state.DedupClaim(state.CLAIMED, "dm:alice:bob", 1764170000123)
    assert state.encode_dedup(claim) == "p|dm:alice:bob|1764170000123"
    assert state.decode_dedup("a|g:team|5") == state.DedupClaim(state.DURABLE, "g:team", 5)


def test_recent_cache_entries_keep_pipes_in_the_json() -> None:
    entry = state.encode_recent(42, '{"body":"a|b"}')
    assert entry == '42|{"body":"a|b"}'
    assert state.decode_recent(entry) == (42, '{"body":"a|b"}')


def test_receipt_fields() -> None:
    field = state.receipt_field("bob", "laptop", "read")
    assert field == "bob|laptop|read"
    assert state.receipt_field_user(field) == "bob"
