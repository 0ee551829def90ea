"""Frame parsing and validation: every client op, and the documented errors for bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.protocol import (
    ALL_ERROR_CODES,
    CLIENT_OPS,
    CloseCode,
    ErrorCode,
    Group,
    Hello,
    Ping,
    Presence,
    ProtocolError,
    Receipt,
    Send,
    Sync,
    dm_conversation,
    dm_members,
    error_frame,
    group_conversation,
    is_conversation_id,
    message_frame,
    message_id,
    parse_frame,
)

pytestmark = pytest.mark.unit

MAX = 65536


def parse(frame: Any) -> Any:
    return parse_frame(json.dumps(frame), MAX)


def code_of(raw: str | bytes) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse_frame(raw, MAX)
    assert caught.value.code in ALL_ERROR_CODES
    return caught.value.code


def test_hello_with_and_without_sync() -> None:
    hello = parse({"op": "hello", "device_id": "phone-1", "token": "t", "ref": 1})
    assert hello == Hello("phone-1", "t", None, None, "1")
    synced = parse(
        {"op": "hello", "device_id": "d", "sync": {"cursors": {"dm:a:b": 4}, "limit": 10}}
    )
    assert synced.cursors == {"dm:a:b": 4}
    assert synced.sync_limit == 10
    assert parse({"op": "hello", "device_id": "d", "sync": {}}).cursors == {}


def test_send_dm_and_group() -> None:
    dm = parse({"op": "send", "client_msg_id": "c-1", "to": "bob", "body": "hi"})
    assert dm == Send("c-1", "bob", None, "hi", "c-1")  # ref defaults to client_msg_id
    group = parse({"op": "send", "client_msg_id": "c-2", "group_id": "g1", "body": "", "ref": "r"})
    assert (group.group_id, group.to, group.ref) == ("g1", None, "r")


def test_other_ops() -> None:
    assert parse({"op": "ping"}) == Ping(None)
    receipt = parse({"op": "receipt", "conversation_id": "g:x", "seq": 3, "kind": "read"})
    assert receipt == Receipt("g:x", 3, "read", None)
    assert parse({"op": "receipt", "conversation_id": "g:x", "seq": 3}).kind == "delivered"
    assert parse({"op": "sync", "cursors": {"g:x": 0}}) == Sync({"g:x": 0}, None, None)
    sub = parse({"op": "presence_subscribe", "users": ["a", "b", "a"]})
    assert sub == Presence("presence_subscribe", ("a", "b"), None)
    create = parse({"op": "group_create", "group_id": "g1", "members": ["b"]})
    assert create == Group("group_create", "g1", ("b",), None)
    assert parse({"op": "group_join", "group_id": "g1"}).members == ()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", ErrorCode.BAD_JSON),
        ("", ErrorCode.BAD_JSON),
        ("[1,2]", ErrorCode.BAD_FRAME),
        ('"hello"', ErrorCode.BAD_FRAME),
        ("{}", ErrorCode.BAD_FRAME),
        ('{"op": 5}', ErrorCode.BAD_FRAME),
        ('{"op": "teleport"}', ErrorCode.UNKNOWN_OP),
        (b'{"op": "ping"}', ErrorCode.BAD_FRAME),
        ('{"op": "ping", "ref": {"x": 1}}', ErrorCode.BAD_FRAME),
        ('{"op": "ping", "ref": true}', ErrorCode.BAD_FRAME),
        ('{"op": "ping", "ref": "' + "r" * 65 + '"}', ErrorCode.BAD_FRAME),
        ('{"op": "hello"}', ErrorCode.BAD_FRAME),
        ('{"op": "hello", "device_id": "has space"}', ErrorCode.BAD_FRAME),
        ('{"op": "hello", "device_id": "d", "sync": []}', ErrorCode.BAD_FRAME),
        ('{"op": "hello", "device_id": "d", "sync": {"cursors": {"x": 1}}}', ErrorCode.BAD_FRAME),
        ('{"op": "hello", "device_id": "d", "sync": {"cursors": {"g:x": -1}}}', "bad_frame"),
        ('{"op": "send", "client_msg_id": "c", "body": "x"}', ErrorCode.BAD_FRAME),
        (
            '{"op": "send", "client_msg_id": "c", "to": "a", "group_id": "g", "body": "x"}',
            ErrorCode.BAD_FRAME,
        ),
        ('{"op": "send", "client_msg_id": "c", "to": "a", "body": 5}', ErrorCode.BAD_FRAME),
        ('{"op": "send", "client_msg_id": "", "to": "a", "body": "x"}', ErrorCode.BAD_FRAME),
        ('{"op": "send", "client_msg_id": "c", "to": "a:b", "body": "x"}', ErrorCode.BAD_FRAME),
        ('{"op": "receipt", "conversation_id": "g:x"}', ErrorCode.BAD_FRAME),
        ('{"op": "receipt", "conversation_id": "g:x", "seq": 0}', ErrorCode.BAD_FRAME),
        ('{"op": "receipt", "conversation_id": "dm:b:a", "seq": 1}', ErrorCode.BAD_FRAME),
        ('{"op": "receipt", "conversation_id": "g:x", "seq": 1, "kind": "x"}', ErrorCode.BAD_FRAME),
        ('{"op": "presence_query", "users": []}', ErrorCode.BAD_FRAME),
        ('{"op": "presence_query", "users": [1]}', ErrorCode.BAD_FRAME),
        ('{"op": "group_create", "group_id": "g"}', ErrorCode.BAD_FRAME),
        ('{"op": "sync", "cursors": {"g:x": true}}', ErrorCode.BAD_FRAME),
        ('{"op": "sync", "limit": 0}', ErrorCode.BAD_FRAME),
        ('{"op": "send", "client_msg_id": "c", "to": "a", "body": "x\\ud83d"}', "invalid_text"),
        ('{"op": "ping", "ref": "\\udc00"}', ErrorCode.INVALID_TEXT),
        ('{"op": "ping", "extra": {"\\ud800": 1}}', ErrorCode.INVALID_TEXT),
        ('{"op": "ping", "extra": ["ok", "\ud800"]}', ErrorCode.INVALID_TEXT),  # unescaped
    ],
)
def test_bad_frames_get_documented_codes(raw: str | bytes, code: str) -> None:
    assert code_of(raw) == code


def test_limits() -> None:
    users = [f"u{i}" for i in range(201)]
    assert code_of(json.dumps({"op": "presence_query", "users": users})) == ErrorCode.TOO_MANY
    body = "x" * 40000
    frame = json.dumps({"op": "send", "client_msg_id": "c", "to": "a", "body": body})
    assert code_of(frame) == ErrorCode.BAD_FRAME
    with pytest.raises(ProtocolError):
        parse_frame('{"op":"ping"}' + " " * 100, 50)


def test_error_keeps_the_ref_when_it_could_be_read() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_frame('{"op": "send", "ref": "r9", "to": "a"}', MAX)
    assert caught.value.ref == "r9"
    with pytest.raises(ProtocolError) as caught:
        parse_frame('{"op": "send", "client_msg_id": "m1", "to": "a"}', MAX)
    assert caught.value.ref == "m1"


def test_conversation_ids() -> None:
    assert dm_conversation("bob", "alice") == dm_conversation("alice", "bob") == "dm:alice:bob"
    assert dm_members("dm:alice:bob") == ("alice", "bob")
    assert dm_members("g:x") is None
    assert group_conversation("team") == "g:team"
    for good in ("dm:a:b", "dm:a:a", "g:x.y"):
        assert is_conversation_id(good)
    for bad in ("dm:b:a", "dm:a", "g:", "x:y", "g:a:b", "dm:a:b:c", ""):
        assert not is_conversation_id(bad)


def test_message_id_is_deterministic_per_sender() -> None:
    assert message_id("alice", "c1") == message_id("alice", "c1")
    assert message_id("alice", "c1") != message_id("bob", "c1")
    assert len(message_id("alice", "c1")) == 32


def test_server_frame_helpers() -> None:
    error = json.loads(error_frame(ErrorCode.BAD_JSON, "nope", "r1", retry_after_ms=5))
    assert error == {
        "op": "error",
        "code": "bad_json",
        "message": "nope",
        "ref": "r1",
        "retry_after_ms": 5,
    }
    view = json.dumps({"conversation_id": "g:x", "seq": 1})
    assert json.loads(message_frame(view)) == {"op": "message", "conversation_id": "g:x", "seq": 1}


def test_close_codes_are_in_the_documented_ranges() -> None:
    custom = [c for c in CloseCode if c >= 4000]
    assert all(4000 <= c <= 4999 for c in custom)
    assert len({int(c) for c in CloseCode}) == len(list(CloseCode))
    assert set(CLIENT_OPS) >= {"hello", "send", "receipt", "sync", "ping"}
