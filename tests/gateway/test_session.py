"""gateway/session.py: the session table and the outbox (fast path, queue, slow consumers)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway import session as session_module
from gateway.delivery import RECENT_WINDOW_SLACK, recent_window
from gateway.metrics import GatewayMetrics
from gateway.protocol import CloseCode, gap_frame
from gateway.session import WRITE_LIMIT, SessionTable, close_connection
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


def test_the_byte_cap_closes_a_slow_consumer_before_the_frame_count_does() -> None:
    async def scenario() -> None:
        cap = fakes.config(send_queue_max_bytes=str(64 * 1024), sync_byte_budget=str(16 * 1024))
        outbox = fakes.outbox(cap)
        s = fakes.session("alice")
        fakes.ws_of(s).buffered = WRITE_LIMIT
        big = "x" * (40 * 1024)
        assert outbox.push(s, big, "sync_batch")
        assert (s.queued_bytes, outbox.queued_bytes) == (len(big), len(big))
        assert not outbox.push(s, big, "sync_batch")  # 80 KiB > 64 KiB, though 2 < 256 frames
        assert s.close_reason == "slow_consumer"
        outbox.discard(s)
        assert (s.queued_bytes, outbox.queued_bytes, outbox.queued) == (0, 0, 0)

    asyncio.run(scenario())


def test_a_sync_pages_at_the_readers_speed_and_gives_up_on_one_that_never_reads() -> None:
    async def scenario() -> None:
        cfg = fakes.config(
            sync_byte_budget=str(16 * 1024),
            send_queue_max_bytes=str(64 * 1024),
            sync_drain_timeout_s="0.3",
        )
        outbox = fakes.outbox(cfg)
        batch = "b" * (6 * 1024)
        reader, stuck = fakes.session("alice"), fakes.session("bob")
        gates = {}
        for s in (reader, stuck):
            ws = fakes.ws_of(s)
            ws.buffered = WRITE_LIMIT  # backed up: frames queue, a flusher task writes them
            gates[s.user] = gate = asyncio.Event()
            ws.send = _gated(ws, gate)  # type: ignore[method-assign]
            for _ in range(3):
                assert outbox.push(s, batch, "sync_batch")
        # The three stay counted while the flusher writes the first (the gateway holds it until
        # written); with the next they pass the 16 KiB budget: the sync waits for the client.
        waiting = asyncio.ensure_future(outbox.push_paced(reader, batch, "sync_batch"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert reader.queued_bytes == 3 * len(batch)
        gates["alice"].set()  # alice reads
        assert await asyncio.wait_for(waiting, 1)
        await asyncio.sleep(0.01)
        assert fakes.ws_of(reader).written == [batch] * 4  # all of it, in order
        # bob never reads: his sync gives up after the drain timeout and closes him.
        assert not await outbox.push_paced(stuck, batch, "sync_batch")
        assert stuck.close_reason == "slow_consumer"
        await asyncio.sleep(0)
        assert fakes.ws_of(stuck).closed == (CloseCode.SLOW_CONSUMER, "sync not read in time")

    asyncio.run(scenario())


def _gated(ws: fakes.FakeWebSocket, gate: asyncio.Event) -> Any:
    """A socket send that completes only once the client reads (``gate`` set)."""

    async def send(frame: str) -> None:
        await gate.wait()
        ws.written.append(frame)

    return send


def test_a_sync_reads_only_the_cache_tail_the_hint_says_is_newer() -> None:
    assert recent_window(cursor=90, hint=100, size=200) == 10 + RECENT_WINDOW_SLACK
    assert recent_window(cursor=0, hint=1000, size=200) == 200  # never more than the cache
    assert recent_window(cursor=5, hint=None, size=200) == 200  # no hint: all
    assert recent_window(cursor=7, hint=3, size=200) == 200  # a stale hint: all


def test_a_close_the_peer_cannot_take_is_an_abort(monkeypatch: pytest.MonkeyPatch) -> None:
    """websockets' close() first waits for the send buffer to drain: with a peer that reads
    nothing it would wait forever, keeping the session."""
    monkeypatch.setattr(session_module, "CLOSE_TIMEOUT_S", 0.05)

    async def scenario() -> None:
        ws = fakes.FakeWebSocket()
        aborted: list[bool] = []
        ws.transport.abort = lambda: aborted.append(True)

        async def close_blocked_on_drain(code: int, reason: str) -> None:
            await asyncio.Event().wait()

        ws.close = close_blocked_on_drain  # type: ignore[method-assign]
        await asyncio.wait_for(close_connection(ws, CloseCode.SLOW_CONSUMER, "x"), 1)  # type: ignore[arg-type]
        assert aborted == [True]
        # A peer that takes the close is closed with the handshake, not aborted.
        ws2 = fakes.FakeWebSocket()
        await close_connection(ws2, CloseCode.IDLE_TIMEOUT, "idle timeout")  # type: ignore[arg-type]
        assert ws2.closed == (CloseCode.IDLE_TIMEOUT, "idle timeout")

    asyncio.run(scenario())
