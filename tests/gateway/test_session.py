"""gateway/session.py: the session table and the outbox (fast path, queue, slow consumers)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.metrics import GatewayMetrics
from gateway.protocol import CloseCode, gap_frame
from gateway.session import WRITE_LIMIT, SessionTable
from tests.gateway import fakes

pytestmark = pytest.mark.unit


def test_table_keeps_sessions_by_user_and_forgets_empty_users() -> None:
    table = SessionTable()
    phone, laptop = fakes.session("alice", "phone"), fakes.session("alice", "laptop")
    assert table.add(phone) == [phone]
    assert table.add(laptop) == [phone, laptop]
    assert table.remove(phone)
    assert table.by_user == {"alice": [laptop]}
    assert not table.remove(phone)  # twice is harmless
    assert table.remove(laptop)
    assert (table.by_user, table.sessions) == ({}, set())


def test_frames_go_straight_to_the_socket_while_its_buffer_has_room() -> None:
    metrics = GatewayMetrics()
    outbox = fakes.outbox(metrics=metrics)
    s = fakes.session("alice")
    assert outbox.push(s, '{"op":"pong"}', "pong")
    assert fakes.ws_of(s).written == ['{"op":"pong"}']
    assert (s.outbox, outbox.queued) == (None, 0)
    sent = metrics.registry.get_sample_value("im_gateway_frames_out_total", {"op": "pong"})
    assert sent == 1


def test_a_live_gap_frame_is_written_and_counted_from_zero() -> None:
    metrics = GatewayMetrics()
    outbox = fakes.outbox(metrics=metrics)
    labels = {"op": "gap"}
    assert metrics.registry.get_sample_value("im_gateway_frames_out_total", labels) == 0
    s = fakes.session("alice")
    frame = gap_frame("dm:alice:bob", 4, 6)
    assert outbox.push(s, frame, "gap")
    assert fakes.ws_of(s).written == [frame]
    assert metrics.registry.get_sample_value("im_gateway_frames_out_total", labels) == 1


def test_a_backed_up_socket_gets_a_queue_flushed_in_order() -> None:
    async def scenario() -> None:
        outbox = fakes.outbox()
        s = fakes.session("alice")
        fakes.ws_of(s).buffered = WRITE_LIMIT
        for i in range(3):
            assert outbox.push(s, f'{{"op":"message","i":{i}}}', "message")
        assert outbox.queued == 3
        fakes.ws_of(s).buffered = 0
        assert outbox.push(s, '{"op":"message","i":3}', "message")  # behind the queue
        await asyncio.sleep(0)
        assert [f["i"] for f in fakes.ws_of(s).frames()] == [0, 1, 2, 3]
        assert (s.outbox, outbox.queued) == (None, 0)

    asyncio.run(scenario())


def test_an_overflowing_queue_closes_the_slow_consumer() -> None:
    async def scenario() -> None:
        outbox = fakes.outbox(fakes.config(send_queue_max="2"))
        s = fakes.session("alice")
        fakes.ws_of(s).buffered = WRITE_LIMIT
        assert outbox.push(s, "a", "message")
        assert outbox.push(s, "b", "message")
        assert not outbox.push(s, "c", "message")
        assert s.close_reason == "slow_consumer"
        assert not outbox.push(s, "d", "message")  # closing: nothing more is queued
        await asyncio.sleep(0)
        assert fakes.ws_of(s).closed == (CloseCode.SLOW_CONSUMER, "send queue overflow")
        outbox.discard(s)
        assert (s.outbox, outbox.queued) == (None, 0)

    asyncio.run(scenario())


def test_ok_only_answers_frames_with_a_ref() -> None:
    outbox = fakes.outbox()
    s = fakes.session("alice")
    outbox.ok(s, None)
    outbox.ok(s, "r1")
    assert fakes.ws_of(s).frames() == [{"op": "ok", "ref": "r1"}]
