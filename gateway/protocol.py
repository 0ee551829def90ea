"""Wire protocol: frame parsing and validation, error codes and close codes.

Pure logic, no I/O. ``parse_frame`` turns one WebSocket text message into a typed frame or raises
``ProtocolError`` with a documented code; it never raises anything else (fuzzed in the tests).
docs/protocol.md is the normative description; keep the two in step.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

# 2: gap frames and sync_batch.gaps (in-doubt seq ranges);
# 3: the error code outcome_unknown (a send that may have been written).
PROTOCOL_VERSION = 3


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down at the end of a drain
    MESSAGE_TOO_BIG = 1009  # frame larger than max_frame_bytes (sent by the WebSocket layer)
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # a backend (Redis) failed while opening the session
    PROTOCOL_ERROR = 4000  # first frame not hello, binary frame, or too many bad frames
    UNAUTHORIZED = 4001  # token missing, malformed, bad signature/issuer/audience/subject
    TOKEN_EXPIRED = 4002  # at hello, or while connected when exp passes
    HELLO_TIMEOUT = 4003  # no hello within hello_timeout_s
    RATE_LIMITED = 4004  # kept flooding after rate_limited errors
    SLOW_CONSUMER = 4005  # the per-connection send queue overflowed
    IDLE_TIMEOUT = 4006  # nothing received for idle_timeout_s
    RECONNECT = 4009  # draining: reconnect elsewhere (a reconnect frame precedes it)
    REPLACED = 4010  # a newer session of the same user and device opened on this gateway
    TOO_MANY_SESSIONS = 4011  # the user has max_sessions_per_user other devices on this gateway


class ErrorCode:
    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    INVALID_TEXT = "invalid_text"  # a string (key or value) holds a lone UTF-16 surrogate
    UNKNOWN_OP = "unknown_op"
    NOT_AUTHENTICATED = "not_authenticated"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    ALREADY_AUTHENTICATED = "already_authenticated"
    RATE_LIMITED = "rate_limited"
    NOT_MEMBER = "not_member"
    DUPLICATE_ID = "duplicate_id"
    GROUP_EXISTS = "group_exists"
    NOT_FOUND = "not_found"
    TOO_MANY = "too_many"
    UNAVAILABLE = "unavailable"  # a backend failed and the request had no effect
    OUTCOME_UNKNOWN = "outcome_unknown"  # a send that may have been written (protocol 3)
    INTERNAL = "internal"


ALL_ERROR_CODES = frozenset(
    v for k, v in vars(ErrorCode).items() if not k.startswith("_") and isinstance(v, str)
)


class ProtocolError(Exception):
    """A frame the server refuses; becomes an ``error`` frame (the connection stays open)."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


# Identifiers: users (JWT sub), devices, groups. No ':' so conversation ids stay unambiguous.
ID_RE = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
CLIENT_MSG_ID_RE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")
REF_MAX = 64
MAX_BODY_CHARS = 32768
MAX_USERS_PER_FRAME = 200
MAX_CURSORS = 5000
MAX_SEQ = 2**62


@dataclass(slots=True, frozen=True)
class Hello:
    device_id: str
    token: str | None
    cursors: dict[str, int] | None  # None: no sync at connect; {} : sync everything from 0
    sync_limit: int | None
    ref: str | None


@dataclass(slots=True, frozen=True)
class Ping:
    ref: str | None


@dataclass(slots=True, frozen=True)
class Send:
    client_msg_id: str
    to: str | None  # 1:1 recipient
    group_id: str | None
    body: str
    ref: str | None


@dataclass(slots=True, frozen=True)
class Receipt:
    conversation_id: str
    seq: int
    kind: str  # delivered | read
    ref: str | None


@dataclass(slots=True, frozen=True)
class Sync:
    cursors: dict[str, int]
    limit: int | None
    ref: str | None


@dataclass(slots=True, frozen=True)
class Presence:
    op: str  # presence_subscribe | presence_unsubscribe | presence_query
    users: tuple[str, ...]
    ref: str | None


@dataclass(slots=True, frozen=True)
class Group:
    op: str  # group_create | group_join | group_leave | group_members
    group_id: str
    members: tuple[str, ...]  # group_create only
    ref: str | None


Frame = Hello | Ping | Send | Receipt | Sync | Presence | Group

CLIENT_OPS = (
    "hello",
    "ping",
    "send",
    "receipt",
    "sync",
    "presence_subscribe",
    "presence_unsubscribe",
    "presence_query",
    "group_create",
    "group_join",
    "group_leave",
    "group_members",
)


def parse_frame(raw: str | bytes, max_bytes: int) -> Frame:
    """Decode and validate one client frame. Raises only ProtocolError."""
    if isinstance(raw, bytes):
        raise ProtocolError(ErrorCode.BAD_FRAME, "binary frames are not supported; send JSON text")
    if len(raw) > max_bytes:  # the WebSocket layer closes first; belt and braces
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame larger than {max_bytes} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_JSON, "frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame must be a JSON object")
    if ("\\u" in raw or not raw.isascii()) and not _valid_text(data):
        raise ProtocolError(
            ErrorCode.INVALID_TEXT,
            "a string holds a lone surrogate (not Unicode text); send UTF-8 text",
            _ref_of_invalid(data),
        )
    ref = _ref(data)
    op = data.get("op")
    if not isinstance(op, str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "missing string field 'op'", ref)
    parser = _PARSERS.get(op)
    if parser is None:
        raise ProtocolError(ErrorCode.UNKNOWN_OP, f"unknown op {op[:40]!r}", ref)
    return parser(data, ref)


def _valid_text(value: Any) -> bool:
    """True when every string in ``value`` (object keys too) is encodable as UTF-8, i.e. holds
    no lone surrogate such as the JSON escape "\\ud83d" without its pair (what a JavaScript
    client sends after cutting a string between the two halves of an emoji)."""
    if isinstance(value, str):
        if value.isascii():
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_valid_text(k) and _valid_text(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_valid_text(v) for v in value)
    return True


def _ref_of_invalid(data: dict[str, Any]) -> str | None:
    """The ref for the invalid_text error: the frame's ref when that one is valid, else (send)
    the client_msg_id, so the client can tell which send was refused."""
    try:
        ref = _ref(data)
    except ProtocolError:
        return None
    if ref is not None:
        return ref if _valid_text(ref) else None
    cmid = data.get("client_msg_id")
    if data.get("op") == "send" and isinstance(cmid, str) and CLIENT_MSG_ID_RE.match(cmid):
        return cmid
    return None


def _ref(data: dict[str, Any]) -> str | None:
    ref = data.get("ref")
    if ref is None:
        return None
    if isinstance(ref, bool) or not isinstance(ref, str | int):
        raise ProtocolError(ErrorCode.BAD_FRAME, "'ref' must be a string or an integer")
    text = str(ref)
    if len(text) > REF_MAX:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"'ref' longer than {REF_MAX} characters")
    return text


def _id(data: dict[str, Any], field: str, ref: str | None, pattern: re.Pattern[str] = ID_RE) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not pattern.match(value):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"'{field}' must match {pattern.pattern}", ref)
    return value


def _optional_int(
    data: dict[str, Any], field: str, ref: str | None, lo: int, hi: int
) -> int | None:
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"'{field}' must be an integer {lo}..{hi}", ref)
    return value


def _users(
    data: dict[str, Any], field: str, ref: str | None, *, allow_empty: bool
) -> tuple[str, ...]:
    value = data.get(field)
    if not isinstance(value, list) or (not value and not allow_empty):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"'{field}' must be a non-empty list", ref)
    if len(value) > MAX_USERS_PER_FRAME:
        raise ProtocolError(ErrorCode.TOO_MANY, f"at most {MAX_USERS_PER_FRAME} users", ref)
    for item in value:
        if not isinstance(item, str) or not ID_RE.match(item):
            raise ProtocolError(ErrorCode.BAD_FRAME, f"'{field}' items must be user ids", ref)
    return tuple(dict.fromkeys(value))


def _cursors(value: Any, ref: str | None) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "'cursors' must be an object", ref)
    if len(value) > MAX_CURSORS:
        raise ProtocolError(ErrorCode.TOO_MANY, f"at most {MAX_CURSORS} cursors", ref)
    out: dict[str, int] = {}
    for conv, seq in value.items():
        if not is_conversation_id(conv):
            raise ProtocolError(ErrorCode.BAD_FRAME, f"bad conversation id {conv[:80]!r}", ref)
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"cursor for {conv} must be an int >= 0", ref)
        out[conv] = seq
    return out


def _hello(data: dict[str, Any], ref: str | None) -> Hello:
    device_id = _id(data, "device_id", ref)
    token = data.get("token")
    if token is not None and (not isinstance(token, str) or len(token) > 16384):
        raise ProtocolError(ErrorCode.BAD_FRAME, "'token' must be a string", ref)
    cursors = None
    limit = None
    sync = data.get("sync")
    if sync is not None:
        if not isinstance(sync, dict):
            raise ProtocolError(ErrorCode.BAD_FRAME, "'sync' must be an object", ref)
        cursors = _cursors(sync.get("cursors", {}), ref)
        limit = _optional_int(sync, "limit", ref, 1, 10000)
    return Hello(device_id, token, cursors, limit, ref)


def _ping(data: dict[str, Any], ref: str | None) -> Ping:
    return Ping(ref)


def _send(data: dict[str, Any], ref: str | None) -> Send:
    cmid = _id(data, "client_msg_id", ref, CLIENT_MSG_ID_RE)
    ref = ref or cmid
    has_to, has_group = data.get("to") is not None, data.get("group_id") is not None
    if has_to == has_group:
        raise ProtocolError(ErrorCode.BAD_FRAME, "exactly one of 'to' or 'group_id'", ref)
    to = _id(data, "to", ref) if has_to else None
    group_id = _id(data, "group_id", ref) if has_group else None
    body = data.get("body")
    if not isinstance(body, str) or len(body) > MAX_BODY_CHARS:
        raise ProtocolError(
            ErrorCode.BAD_FRAME, f"'body' must be a string <= {MAX_BODY_CHARS}", ref
        )
    return Send(cmid, to, group_id, body, ref)


def _receipt(data: dict[str, Any], ref: str | None) -> Receipt:
    conv = data.get("conversation_id")
    if not isinstance(conv, str) or not is_conversation_id(conv):
        raise ProtocolError(ErrorCode.BAD_FRAME, "'conversation_id' is not a conversation id", ref)
    seq = _optional_int(data, "seq", ref, 1, MAX_SEQ)
    if seq is None:
        raise ProtocolError(ErrorCode.BAD_FRAME, "'seq' is required", ref)
    kind = data.get("kind", "delivered")
    if kind not in ("delivered", "read"):
        raise ProtocolError(ErrorCode.BAD_FRAME, "'kind' must be delivered or read", ref)
    return Receipt(conv, seq, kind, ref)


def _sync(data: dict[str, Any], ref: str | None) -> Sync:
    cursors = _cursors(data.get("cursors", {}), ref)
    return Sync(cursors, _optional_int(data, "limit", ref, 1, 10000), ref)


def _presence(data: dict[str, Any], ref: str | None) -> Presence:
    return Presence(str(data["op"]), _users(data, "users", ref, allow_empty=False), ref)


def _group(data: dict[str, Any], ref: str | None) -> Group:
    op = str(data["op"])
    group_id = _id(data, "group_id", ref)
    members: tuple[str, ...] = ()
    if op == "group_create":
        members = _users(data, "members", ref, allow_empty=True)
    return Group(op, group_id, members, ref)


_PARSERS: dict[str, Callable[[dict[str, Any], str | None], Frame]] = {
    "hello": _hello,
    "ping": _ping,
    "send": _send,
    "receipt": _receipt,
    "sync": _sync,
    "presence_subscribe": _presence,
    "presence_unsubscribe": _presence,
    "presence_query": _presence,
    "group_create": _group,
    "group_join": _group,
    "group_leave": _group,
    "group_members": _group,
}


# Conversations -----------------------------------------------------------------------------


def dm_conversation(a: str, b: str) -> str:
    """1:1 conversation id: the two user ids in sorted order (the same for both sides)."""
    low, high = (a, b) if a <= b else (b, a)
    return f"dm:{low}:{high}"


def group_conversation(group_id: str) -> str:
    return f"g:{group_id}"


def is_conversation_id(value: str) -> bool:
    parts = value.split(":")
    if len(parts) == 3 and parts[0] == "dm":
        return bool(ID_RE.match(parts[1]) and ID_RE.match(parts[2]) and parts[1] <= parts[2])
    if len(parts) == 2 and parts[0] == "g":
        return bool(ID_RE.match(parts[1]))
    return False


def dm_members(conversation_id: str) -> tuple[str, str] | None:
    parts = conversation_id.split(":")
    if len(parts) == 3 and parts[0] == "dm":
        return parts[1], parts[2]
    return None


def message_id(sender: str, client_msg_id: str) -> str:
    """Deterministic id, so a resend produced twice is still one message downstream."""
    return hashlib.blake2b(f"{sender}\0{client_msg_id}".encode(), digest_size=16).hexdigest()


# Server frames -----------------------------------------------------------------------------

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode(frame: dict[str, Any]) -> str:
    return _dumps(frame)


def error_frame(code: str, message: str, ref: str | None = None, **extra: Any) -> str:
    frame: dict[str, Any] = {"op": "error", "code": code, "message": message}
    if ref is not None:
        frame["ref"] = ref
    frame.update(extra)
    return _dumps(frame)


def gap_frame(conversation_id: str, low: int, high: int) -> str:
    """Seqs ``low``..``high`` of the conversation are in doubt (docs/protocol.md 5.6): move the
    cursor past them; a message inside the range may still arrive late."""
    return encode({"op": "gap", "conversation_id": conversation_id, "from": low, "to": high})


GAP_FRAME_PREFIX = '{"op":"gap",'


def message_frame(view_json: str) -> str:
    """The ``message`` frame for an encoded client view, without decoding it again."""
    return '{"op":"message",' + view_json[1:]
