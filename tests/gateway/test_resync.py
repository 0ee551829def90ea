"""After its pub/sub subscription is cut (CLIENT KILL TYPE pubsub on the real Redis), a gateway
of the local stack listens again and tells each of its sessions to sync, once, spread over the
resync window (docs/protocol.md 5.3); live delivery works again afterwards. A Redis that stops
answering without closing the connection (SIGSTOP) is given up on by its missing pong, not
waited for."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect

from tests.gateway.conftest import Im
from tests.gateway.support import extra_gateway

pytestmark = pytest.mark.integration


async def _session(im: Im, ws_url: str, user: str) -> ClientConnection:
    ws = await connect(ws_url, additional_headers={"Authorization": f"Bearer {im.token(user)}"})
    await ws.send(json.dumps({"op": "hello", "device_id": "d1", "sync": {"cursors": {}}}))
    while json.loads(await ws.recv())["op"] != "sync_done":
        pass
    return ws


async def _next(ws: ClientConnection, op: str, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame["op"] == op:
                return frame


def test_a_cut_subscription_gets_every_session_told_to_sync_once(im: Im, tmp_path: Path) -> None:
    settings = {"IMGW_RESYNC_WINDOW_S": "2"}
    alice, bob = im.uid("resync-a"), im.uid("resync-b")
    with extra_gateway(im.stack, im.uid("gw-resync"), settings, tmp_path) as (ws_url, http):
        before = im.metrics(http)

        async def scenario() -> None:
            a = await _session(im, ws_url, alice)
            b = await _session(im, ws_url, bob)
            admin = redis.Redis.from_url(im.stack.info.redis_url, **im.stack.redis_kwargs())
            try:
                assert int(admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
            finally:
                admin.close()
            for ws in (a, b):
                frame = await _next(ws, "sync_required", 30)
                assert frame["reason"] == "backend_recovered"
            # Listening again: a message from alice reaches bob live.
            send = {"op": "send", "client_msg_id": "resync-1", "to": bob, "body": "after"}
            await a.send(json.dumps(send))
            message = await _next(b, "message", 30)
            assert message["body"] == "after"
            await a.close()
            await b.close()

        im.run(scenario)
        after = im.metrics(http)
    assert after["im_gateway_resync_notices_total"] - before["im_gateway_resync_notices_total"] == 2
    assert (
        after["im_gateway_pubsub_reconnects_total"] > before["im_gateway_pubsub_reconnects_total"]
    )


def test_a_redis_that_stops_answering_is_given_up_on_and_the_sessions_resync(
    im: Im, tmp_path: Path
) -> None:
    """Frozen, Redis keeps the subscription's TCP connection open: a blocking read would wait
    for it forever and, after the thaw, go on as if nothing had been missed."""
    stack = im.stack
    settings = {"IMGW_RESYNC_WINDOW_S": "1"}
    with extra_gateway(stack, im.uid("gw-frozen"), settings, tmp_path) as (ws_url, http):
        before = im.metrics(http)["im_gateway_pubsub_reconnects_total"]

        async def scenario() -> None:
            ws = await _session(im, ws_url, im.uid("frozen-a"))
            pid = stack.pid("redis")
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(16)  # ping after 5 s quiet, no pong 5 s later: gone
            finally:
                os.kill(pid, signal.SIGCONT)
            frame = await _next(ws, "sync_required", 60)
            assert frame["reason"] == "backend_recovered"
            await ws.close()

        started = time.monotonic()
        im.run(scenario)
        assert time.monotonic() - started < 90
        after = im.metrics(http)["im_gateway_pubsub_reconnects_total"]
    assert after > before
    log = (tmp_path / f"{im.uid('gw-frozen')}.log").read_text()
    assert "no answer from Redis pub/sub" in log
