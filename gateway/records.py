"""The messages-topic record (docs/protocol.md, section 8): what a gateway produces for an
accepted send and the dispatcher sequences. Encode and decode live here, side by side, so the
gateway, the dispatcher and the tests that inject records into the real topic share one format.

Schema v1: the first format. Schema v2 adds "ep", the shard map epoch the accepting gateway had
last read (a stale stamp only makes the record held, never sequenced twice), and "rg", the
accepting region. Both are decoded; gateways write v2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway.protocol import dm_members, encode

SCHEMAS = (1, 2)
CURRENT_SCHEMA = 2
KINDS = ("dm", "group")


class BadRecord(ValueError):
    pass


@dataclass(slots=True)
class Accepted:
    """One record of the messages topic, decoded, plus what the dispatcher learns about it."""

    message_id: str
    conversation_id: str
    kind: str
    sender: str
    device: str
    client_msg_id: str
    to: str | None
    group_id: str | None
    body: str
    accepted_at: int
    epoch: int = 0  # v2 "ep": the shard map epoch the accepting gateway had (v1: 0)
    region: str | None = None  # v2 "rg": the accepting region (v1: unknown)
    partition: int = -1  # the Kafka partition it came from
    owner: int | str = -1  # the writer token's owner (partition, or this group member)
    raw: bytes = b""  # the record as produced (kept when it is held)


def encode_record(
    *,
    message_id: str,
    conversation_id: str,
    sender: str,
    device: str,
    client_msg_id: str,
    body: str,
    accepted_at: int,
    node: str,
    epoch: int,
    region: str,
    to: str | None = None,
    group_id: str | None = None,
) -> bytes:
    """A v2 record: a DM names its peer ("to"), a group message its group ("gid")."""
    if (to is None) == (group_id is None):
        raise ValueError("a record names either a DM peer or a group, not both or neither")
    record: dict[str, object] = {
        "v": CURRENT_SCHEMA,
        "mid": message_id,
        "conv": conversation_id,
        "kind": "group" if group_id is not None else "dm",
        "from": sender,
        "dev": device,
        "cmid": client_msg_id,
        "body": body,
        "ts": accepted_at,
        "gw": node,
        "ep": epoch,
        "rg": region,
    }
    if group_id is not None:
        record["gid"] = group_id
    else:
        record["to"] = to
    return encode(record).encode()


def parse_record(value: bytes) -> Accepted:
    """Decode a messages-topic record, schema v1 or v2; BadRecord for anything else."""
    try:
        data = json.loads(value)
        version = data.get("v")
        if version not in SCHEMAS:
            raise BadRecord(f"unsupported schema version {version!r}")
        epoch = int(data["ep"]) if version == 2 else 0
        region = str(data["rg"]) if version == 2 else None
        if epoch < 0:
            raise BadRecord(f"negative map epoch {epoch}")
        kind = data["kind"]
        if kind not in KINDS:
            raise BadRecord(f"unknown kind {kind!r}")
        record = Accepted(
            message_id=str(data["mid"]),
            conversation_id=str(data["conv"]),
            kind=kind,
            sender=str(data["from"]),
            device=str(data["dev"]),
            client_msg_id=str(data["cmid"]),
            to=data.get("to"),
            group_id=data.get("gid"),
            body=str(data["body"]),
            accepted_at=int(data["ts"]),
            epoch=epoch,
            region=region,
        )
    except BadRecord:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadRecord(f"undecodable record: {exc!r}") from None
    if kind == "dm" and dm_members(record.conversation_id) is None:
        raise BadRecord(f"dm record with conversation {record.conversation_id!r}")
    if kind == "group" and not record.group_id:
        raise BadRecord("group record without gid")
    return record
