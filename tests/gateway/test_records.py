"""The messages-topic record: what the gateway encodes is what the dispatcher decodes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol import dm_conversation, group_conversation, message_id
from gateway.records import CURRENT_SCHEMA, BadRecord, encode_record, parse_record

pytestmark = pytest.mark.unit

_ids = st.text(st.characters(codec="utf-8", exclude_characters=":"), min_size=1, max_size=12)


def _encode(**overrides: Any) -> bytes:
    """A DM record from alice to bob; ``overrides`` replace any field."""
    fields: dict[str, Any] = {
        "message_id": message_id("alice", "c1"),
        "conversation_id": dm_conversation("alice", "bob"),
        "sender": "alice",
        "device": "phone",
        "client_msg_id": "c1",
        "body": "hi",
        "accepted_at": 1_700_000_000_000,
        "node": "gw-1",
        "epoch": 0,
        "region": "us-east",
        "to": "bob",
    }
    fields.update(overrides)
    return encode_record(**fields)


@given(sender=_ids, peer=_ids, body=st.text(max_size=50), epoch=st.integers(0, 2**31))
def test_a_dm_record_round_trips(sender: str, peer: str, body: str, epoch: int) -> None:
    conv = dm_conversation(sender, peer)
    value = _encode(
        message_id=message_id(sender, "c1"),
        conversation_id=conv,
        sender=sender,
        body=body,
        epoch=epoch,
        region="eu-central",
        to=peer,
    )
    decoded = parse_record(value)
    assert (decoded.conversation_id, decoded.kind, decoded.to, decoded.group_id) == (
        conv,
        "dm",
        peer,
        None,
    )
    assert (decoded.sender, decoded.body, decoded.epoch, decoded.region) == (
        sender,
        body,
        epoch,
        "eu-central",
    )
    assert decoded.message_id == message_id(sender, "c1")


def test_a_group_record_round_trips_and_names_its_group() -> None:
    value = _encode(conversation_id=group_conversation("team"), to=None, group_id="team")
    assert json.loads(value)["v"] == CURRENT_SCHEMA
    decoded = parse_record(value)
    assert (decoded.kind, decoded.group_id, decoded.to) == ("group", "team", None)


@pytest.mark.parametrize(("to", "gid"), [("bob", "team"), (None, None)])
def test_a_record_names_a_peer_or_a_group_never_both_or_neither(
    to: str | None, gid: str | None
) -> None:
    with pytest.raises(ValueError, match="either a DM peer or a group"):
        _encode(to=to, group_id=gid)


def test_a_dm_record_whose_conversation_is_not_a_dm_is_bad() -> None:
    with pytest.raises(BadRecord, match="dm record with conversation"):
        parse_record(_encode(conversation_id="g:team"))
