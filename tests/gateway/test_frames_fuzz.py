"""Fuzz the parse/validate layer: whatever arrives, only ProtocolError (documented codes) or a
valid frame comes out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.protocol import ALL_ERROR_CODES, CLIENT_OPS, ErrorCode, ProtocolError, parse_frame

pytestmark = pytest.mark.unit

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)
field_names = st.sampled_from(
    [
        *("op", "ref", "device_id", "token", "sync", "cursors", "limit"),  # hello, sync
        *("client_msg_id", "to", "group_id", "body"),  # send
        *("conversation_id", "seq", "kind", "users", "members"),  # receipt, presence, groups
    ]
)
plausible = st.fixed_dictionaries(
    {"op": st.sampled_from([*CLIENT_OPS, "bogus", ""])},
    optional={
        "ref": st.one_of(st.text(max_size=70), st.integers(), json_values),
        "device_id": st.one_of(st.text(max_size=70), json_values),
        "client_msg_id": st.text(max_size=70),
        "to": st.one_of(st.text(max_size=20), st.none()),
        "group_id": st.one_of(st.text(max_size=20), st.none()),
        "body": st.one_of(st.text(max_size=100), json_values),
        "conversation_id": st.sampled_from(["dm:a:b", "g:x", "dm:b:a", "x", ""]),
        "seq": st.one_of(st.integers(), json_values),
        "kind": st.sampled_from(["delivered", "read", "other"]),
        "users": st.lists(st.text(max_size=10), max_size=5),
        "members": st.one_of(st.lists(st.text(max_size=10), max_size=5), json_values),
        "cursors": st.dictionaries(st.text(max_size=12), json_values, max_size=4),
        "sync": st.one_of(json_values, st.fixed_dictionaries({"cursors": json_values})),
        "limit": json_values,
    },
)


def check(raw: str | bytes, max_bytes: int = 4096) -> ProtocolError | None:
    error: ProtocolError | None = None
    try:
        frame = parse_frame(raw, max_bytes)
    except ProtocolError as exc:
        error = exc
    if error is not None:
        assert error.code in ALL_ERROR_CODES
        assert isinstance(error.message, str)
        assert error.ref is None or (isinstance(error.ref, str) and len(error.ref) <= 64)
        # Whatever is echoed must be sendable: the error frame is UTF-8 on the wire.
        if error.ref is not None:
            error.ref.encode("utf-8")
        return error
    assert type(frame).__name__ in {"Hello", "Ping", "Send", "Receipt", "Sync", "Presence", "Group"}
    # A parsed frame only holds text that UTF-8 (Kafka, Redis, the socket) can carry.
    for value in (getattr(frame, f) for f in frame.__slots__):
        for text in _strings(value):
            text.encode("utf-8")
    return None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


# Lone surrogates: a high or a low half of a UTF-16 pair on its own (JavaScript truncation).
lone = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
text_with_lone = st.builds(
    lambda head, half, tail: head + half + tail, st.text(max_size=20), lone, st.text(max_size=20)
)
surrogate_fields = st.sampled_from(
    ["body", "ref", "token", "device_id", "client_msg_id", "to", "group_id", "op", "unknown"]
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text(raw: str) -> None:
    check(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


@settings(max_examples=600, deadline=None)
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    check(json.dumps(value))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible, st.dictionaries(field_names, json_values, max_size=3))
def test_plausible_frames(frame: dict[str, Any], noise: dict[str, Any]) -> None:
    check(json.dumps(frame))
    check(json.dumps({**frame, **noise}))


def test_deep_nesting_is_a_protocol_error() -> None:
    check("[" * 100000 + "]" * 100000, max_bytes=10**6)
    check('{"op":"ping","ref":' + "[" * 5000 + "]" * 5000 + "}", max_bytes=10**6)


def _has_lone(value: Any) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for text in _strings(value) for c in text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible, surrogate_fields, text_with_lone, st.booleans())
def test_lone_surrogates_are_refused_with_invalid_text(
    frame: dict[str, Any], field: str, bad: str, escaped: bool
) -> None:
    """A lone surrogate anywhere (a field, an unknown field, a key, nested) is invalid_text,
    whether it arrives as a JSON escape or as the character itself."""
    frame = {**frame, field: bad}
    raw = json.dumps(frame, ensure_ascii=escaped)
    # The size limit is checked first (bad_frame); it is not what this property is about.
    error = check(raw, max_bytes=len(raw))
    assert error is not None
    assert error.code == ErrorCode.INVALID_TEXT
    nested = {"op": "send", "client_msg_id": "c-1", "to": "bob", "body": "ok", "x": [{bad: 1}]}
    error = check(json.dumps(nested, ensure_ascii=escaped))
    assert error is not None
    assert error.code == ErrorCode.INVALID_TEXT
    assert error.ref == "c-1"  # the send can be matched to its refusal


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible, st.dictionaries(field_names, json_values, max_size=3), st.booleans())
def test_paired_surrogates_and_other_text_still_parse(
    frame: dict[str, Any], noise: dict[str, Any], escaped: bool
) -> None:
    """Valid text (emoji as escaped surrogate pairs included) is never invalid_text."""
    merged = {**frame, **noise}
    if _has_lone(merged):
        return
    error = check(json.dumps(merged, ensure_ascii=escaped))
    assert error is None or error.code != ErrorCode.INVALID_TEXT
    send = {"op": "send", "client_msg_id": "c", "to": "bob", "body": "x\U0001f600y"}
    assert check(json.dumps(send, ensure_ascii=escaped)) is None
