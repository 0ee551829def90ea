"""gateway/pubsub.py: each payload of the node and presence channels reaches its handler; a bad
one is logged and skipped."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import state
from gateway.metrics import GatewayMetrics
from gateway.pubsub import PubSub
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
