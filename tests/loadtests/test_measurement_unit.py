"""Sequence accounting, clock correction and frame encoding of the Locust side."""

from __future__ import annotations

from collections import Counter

import pytest

from loadtests.clock import ClockSync
from loadtests.imclient import Closed, ImConnection, encode_frame
from loadtests.tracking import SeqTracker

pytestmark = pytest.mark.unit


def test_live_duplicates_reorders_and_final_sync_losses() -> None:
    counters: Counter[str] = Counter()
    tracker = SeqTracker(counters)
    for seq in (1, 2, 4, 3, 3, 6):
        tracker.live("dm:a:b", seq)
    assert counters["duplicated"] == 1
    assert counters["out_of_order"] == 1  # 3 after 4
    assert tracker.cursors() == {"dm:a:b": 4}
    for seq in (5, 6, 7):  # the final sync returns what live delivery missed
        tracker.synced("dm:a:b", seq, final=True)
    assert counters["lost"] == 2  # 5 and 7; 6 was already there
    tracker.synced("g:x", 1, final=False)
    assert counters["delivered_sync"] == 1
    assert counters["delivered_live"] == 5


def test_clock_offset_is_estimated_from_the_fastest_exchange() -> None:
    clock = ClockSync(skew_ms=5000.0)
    # Server is 5000 ms behind this worker's clock; slow samples must not win.
    clock.add_sample(sent_local_ms=10_000, server_ms=5_200, received_local_ms=10_400)
    clock.add_sample(sent_local_ms=20_000, server_ms=15_001, received_local_ms=20_002)
    assert clock.best_rtt_ms == 2
    assert clock.offset_ms == pytest.approx(-5000.0)
    assert abs(clock.now_ms() - (clock.local_ms() - 5000.0)) < 1.0
    uncorrected = ClockSync(skew_ms=5000.0, correct=False)
    uncorrected.add_sample(0, -5000, 0)
    assert uncorrected.now_ms() == pytest.approx(uncorrected.local_ms(), abs=1.0)


def test_frames_are_masked_and_parsed() -> None:
    frame = encode_frame(0x1, b'{"op":"ping"}')
    assert frame[0] == 0x81
    assert frame[1] & 0x80  # client frames are masked
    key, masked = frame[2:6], frame[6:]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(masked)) == b'{"op":"ping"}'
    big = encode_frame(0x1, b"x" * 70000)
    assert big[1] & 0x7F == 127

    conn = ImConnection("ws://127.0.0.1:1/ws", token="t")
    payload = b'{"op":"pong","server_time":1}'
    assert conn._parse(bytes([0x81, len(payload)]) + payload + bytes([0x81])) == [
        {"op": "pong", "server_time": 1}
    ]
    assert conn._buffer == bytes([0x81])  # a partial frame waits for more bytes

    conn = ImConnection("ws://127.0.0.1:1/ws", token="t")
    medium = b'{"body":"' + b"y" * 300 + b'"}'
    header = bytes([0x81, 126]) + len(medium).to_bytes(2, "big")
    assert conn._parse(header[:3]) == []  # even the length may arrive in pieces
    assert conn._parse(header[3:] + medium[:10]) == []
    assert conn._parse(medium[10:] + frame_of(b'{"op":"a"}')) == [{"body": "y" * 300}, {"op": "a"}]
    assert conn._buffer == b""
    conn._parse(frame_of(b'{"op":"b"}') + bytes([0x88, 2]) + (4009).to_bytes(2, "big"))
    with pytest.raises(Closed) as closed:  # the close comes after the frames before it
        conn.receive(0.1)
    assert closed.value.code == 4009


def frame_of(payload: bytes) -> bytes:
    """An unmasked server frame."""
    return bytes([0x81, len(payload)]) + payload
