"""gateway/pubsub.py: each payload of the node and presence channels reaches its handler; a bad
one is logged and skipped. After a lost subscription, the sessions that may have missed
something are told to sync, paced and jittered; a resubscription redis-py makes by itself is
noticed (gateway/redis_client.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway import redis_client, state
from gateway.metrics import GatewayMetrics
from gateway.pubsub import PubSub
from gateway.redis_client import Subscription
from gateway.runtime import Tasks
from gateway.session import SessionTable
from tests.gateway import fakes

pytestmark = pytest.mark.unit


def test_payloads_are_decoded_and_dispatched_by_channel(caplog: pytest.LogCaptureFixture) -> None:
    got: list[Any] = []
    pubsub = PubSub(
        config=fakes.config(node_id="gw-7"),
        metrics=GatewayMetrics(),
        backends=None,  # type: ignore[arg-type]
        routes=None,  # type: ignore[arg-type]
        table=SessionTable(),
        outbox=fakes.outbox(),
        on_delivery=got.append,
        on_receipt=got.append,
        on_presence=got.append,
        tasks=Tasks(),
    )
    assert pubsub.channel == "im:gw:gw-7"
    delivery = [state.DeliveryItem(["bob"], "dm:alice:bob", 1, 5, "{}")]
    receipt = state.ReceiptEvent(["alice"], ("bob", "d1"), "{}")
    pubsub.on_message(pubsub.channel, state.encode_delivery(delivery))
    pubsub.on_message(pubsub.channel, state.encode_receipt_event(receipt))
    pubsub.on_message(pubsub.channel, '{"t":"z"}')  # a newer dispatcher's kind: skipped
    pubsub.on_message(state.PRESENCE_CHANNEL, '{"u":"bob","s":"online"}')
    assert got == [delivery, receipt, state.PresenceEvent("bob", "online")]
    pubsub.on_message(pubsub.channel, "not json")
    assert "bad pub/sub payload on im:gw:gw-7" in caplog.text
    assert len(got) == 3


def _pubsub(table: SessionTable, **settings: str) -> PubSub:
    metrics = GatewayMetrics()
    return PubSub(
        config=fakes.config(**settings),
        metrics=metrics,
        backends=None,  # type: ignore[arg-type]
        routes=None,  # type: ignore[arg-type]
        table=table,
        outbox=fakes.outbox(metrics=metrics),
        on_delivery=lambda items: None,
        on_receipt=lambda event: None,
        on_presence=lambda event: None,
        tasks=Tasks(),
    )


def test_after_a_gap_the_sessions_that_may_have_missed_something_are_told_spread_out() -> None:
    async def main() -> None:
        table = SessionTable()
        sessions = [fakes.session(f"u{i}") for i in range(40)]
        for s in sessions:
            table.add(s)
        pubsub = _pubsub(table, resync_window_s="0.4")
        since = time.monotonic()
        synced_since = sessions[:5]  # started a sync after we listened again: covered
        for s in synced_since:
            s.sync_started_at = since + 0.001
        sessions[5].close_reason = "idle_timeout"  # closing anyway
        started = time.monotonic()
        await pubsub.tell_to_sync(since)
        elapsed = time.monotonic() - started
        told = [s for s in sessions if fakes.ws_of(s).ops() == ["sync_required"]]
        assert told == sessions[6:]  # each once, no one else
        assert fakes.ws_of(sessions[6]).frames()[0]["reason"] == "backend_recovered"
        assert pubsub.metrics.resync_notices._value.get() == 34
        assert 0.2 < elapsed < 1.0  # spread over the 0.4 s window, not all at once

    asyncio.run(main())


def test_the_resync_rate_is_capped_whatever_the_window() -> None:
    async def main() -> None:
        table = SessionTable()
        for i in range(20):
            table.add(fakes.session(f"u{i}"))
        pubsub = _pubsub(table, resync_window_s="0.01", resync_max_per_s="100")
        started = time.monotonic()
        await pubsub.tell_to_sync(time.monotonic())
        assert time.monotonic() - started > 0.1  # 20 at 100/s: about 0.2 s

    asyncio.run(main())


class ScriptedPubSub:
    """What Subscription reads of a redis-py PubSub: messages in order, then a lost link."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages

    async def get_message(self, timeout: float | None) -> dict[str, Any] | None:
        if not self.messages:
            raise ConnectionError("connection lost")
        return self.messages.pop(0)


def test_a_resubscription_redis_py_makes_by_itself_is_reported_once() -> None:
    def confirm(channel: str) -> dict[str, Any]:
        return {"type": "ssubscribe", "channel": channel, "data": 1}

    def message(data: str) -> dict[str, Any]:
        return {"type": "smessage", "channel": "a", "data": data}

    script = [confirm("a"), confirm("b"), message("1")]
    script += [confirm("a"), confirm("b"), message("2")]  # reconnected, resubscribed quietly
    script += [confirm("a"), confirm("b")]  # and once more
    subscription = Subscription(client=object(), channels=["a", "b"])
    subscription._pubsubs = [ScriptedPubSub(script)]
    got: list[str] = []
    resubscribed: list[bool] = []

    async def main() -> None:
        with pytest.raises(ConnectionError):
            await subscription.run(
                lambda _c, data: got.append(data), lambda: resubscribed.append(True)
            )

    asyncio.run(main())
    assert got == ["1", "2"]
    assert resubscribed == [True, True]


class SilentPubSub:
    """A subscription whose Redis went quiet (frozen, or the network dropped it): reads time
    out; ``answers`` says whether a ping still gets its pong."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.pings = 0
        self.pending: list[dict[str, Any]] = []

    async def get_message(self, timeout: float | None) -> dict[str, Any] | None:
        if self.pending:
            return self.pending.pop(0)
        await asyncio.sleep(timeout or 0)
        return None

    async def ping(self) -> None:
        self.pings += 1
        if self.answers:
            self.pending.append({"type": "pong", "channel": None, "data": ""})


def test_a_silent_redis_is_pinged_and_given_up_on_without_a_pong(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_client, "PUBSUB_PING_S", 0.05)
    monkeypatch.setattr(redis_client, "PUBSUB_PONG_WITHIN_S", 0.1)

    async def run(answers: bool) -> tuple[SilentPubSub, float | None, str]:
        """The subscription's pings, when it gave up (None: still running after 1 s), why."""
        quiet = SilentPubSub(answers)
        subscription = Subscription(client=object(), channels=["a"])
        subscription._pubsubs = [quiet]
        started = time.monotonic()
        try:
            async with asyncio.timeout(1.0):
                await subscription.run(lambda _c, _d: None)
        except TimeoutError:
            return quiet, None, ""
        except ConnectionError as lost:
            return quiet, time.monotonic() - started, str(lost)
        raise AssertionError("run() returned")

    alive, gave_up, _ = asyncio.run(run(answers=True))  # quiet but answering: kept
    assert gave_up is None
    assert alive.pings >= 3
    dead, gave_up, why = asyncio.run(run(answers=False))  # no pong: given up on
    assert gave_up is not None
    assert gave_up < 0.5
    assert "no answer from Redis pub/sub" in why
    assert dead.pings == 1
