"""docs/protocol.md and the gateway agree (issue 15 part 4), the pure parts: label values at 0
from the start, and sync_batch frames split at max_frame_bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway.delivery import sync_batches
from gateway.metrics import GatewayMetrics
from gateway.protocol import ALL_ERROR_CODES

pytestmark = pytest.mark.unit


def test_listed_label_values_exist_at_zero_from_the_start() -> None:
    text = GatewayMetrics().render().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    for source in ("cache", "cassandra"):
        key = ("im_gateway_synced_messages_total", (("source", source),))
        assert samples[key] == 0
    for code in ALL_ERROR_CODES | {"unauthorized", "token_expired", "invalid_text"}:
        assert samples[("im_gateway_protocol_errors_total", (("code", code),))] == 0


def _view(seq: int, body: str) -> tuple[int, str]:
    return seq, json.dumps(
        {"conversation_id": "dm:a:b", "seq": seq, "body": body}, ensure_ascii=False
    )


def test_sync_batches_are_split_at_max_frame_bytes_in_seq_order() -> None:
    views = [_view(seq, "é" * 9000) for seq in range(1, 8)]  # ~18 KB of UTF-8 each
    frames = sync_batches("dm:a:b", views, [[9, 12]], 65536)
    assert len(frames) == 3
    assert all(len(f.encode()) <= 65536 for f in frames)
    decoded = [json.loads(f) for f in frames]
    assert [m["seq"] for d in decoded for m in d["messages"]] == list(range(1, 8))
    assert [d.get("gaps") for d in decoded] == [[[9, 12]], None, None]
    assert {d["op"] for d in decoded} == {"sync_batch"}


def test_one_message_larger_than_the_limit_is_alone_in_its_frame() -> None:
    views = [_view(1, "x"), _view(2, "y" * 70000), _view(3, "z")]
    frames = sync_batches("dm:a:b", views, [], 65536)
    assert [[m["seq"] for m in json.loads(f)["messages"]] for f in frames] == [[1], [2], [3]]
    small = sync_batches("dm:a:b", [_view(1, "x"), _view(2, "y")], [], 65536)
    assert len(small) == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(max_size=3000), max_size=40),
    st.integers(min_value=200, max_value=20000),
    st.booleans(),
)
def test_sync_batches_fuzz(bodies: list[str], max_bytes: int, with_gaps: bool) -> None:
    """Whatever the message sizes: every message once, in seq order; a frame over the limit
    holds one message; the gaps only on the first frame."""
    views = [_view(seq, body) for seq, body in enumerate(bodies, start=1)]
    if not views:
        return
    gaps = [[len(views) + 2, len(views) + 3]] if with_gaps else []
    frames = sync_batches("dm:a:b", views, gaps, max_bytes)
    decoded = [json.loads(f) for f in frames]
    assert [m["seq"] for d in decoded for m in d["messages"]] == list(range(1, len(views) + 1))
    for raw, frame in zip(frames, decoded, strict=True):
        assert len(raw.encode()) <= max_bytes or len(frame["messages"]) == 1
        assert frame["messages"]
    assert [d.get("gaps") for d in decoded] == [gaps or None] + [None] * (len(decoded) - 1)
