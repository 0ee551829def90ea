"""gateway/receipts.py: a receipt event reaches every device of the members here except the
one that sent the receipt."""

from __future__ import annotations

import pytest

from gateway import state
from gateway.metrics import GatewayMetrics
from gateway.receipts import Receipts
from gateway.session import SessionTable
from tests.gateway import fakes

pytestmark = pytest.mark.unit


def test_receipt_events_skip_the_sending_device() -> None:
    table = SessionTable()
    sessions = {
        (user, device): fakes.session(user, device)
        for user, device in [("alice", "phone"), ("bob", "phone"), ("bob", "laptop"), ("eve", "x")]
    }
    for s in sessions.values():
        table.add(s)
    receipts = Receipts(
        metrics=GatewayMetrics(),
        backends=None,  # type: ignore[arg-type]
        routes=None,  # type: ignore[arg-type]
        table=table,
        outbox=fakes.outbox(),
    )
    frame = '{"op":"receipt","seq":3}'
    receipts.on_event(state.ReceiptEvent(["alice", "bob"], ("bob", "phone"), frame))
    got = {key for key, s in sessions.items() if fakes.ws_of(s).written == [frame]}
    assert got == {("alice", "phone"), ("bob", "laptop")}
