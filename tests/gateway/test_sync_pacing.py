"""A sync pages at the client's reading speed (docs/protocol.md 5.4): on a real gateway of the
local stack, a client that never reads holds at most the sync budget in the gateway's memory
and is closed as a slow consumer; a client that reads slowly gets the whole history."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import ClientConnection, connect

from gateway.protocol import dm_conversation
from tests.gateway.conftest import Im
from tests.gateway.support import extra_gateway
from tests.support import wait_for

pytestmark = pytest.mark.integration

# About 6 MB of history: more than the kernel's socket buffers on loopback absorb (up to 4 MB
# of send buffer), so the gateway itself has to hold back.
MESSAGES = 200
BODY = "x" * 30000
BUDGET = 64 * 1024
SETTINGS = {
    "IMGW_SYNC_BYTE_BUDGET": str(BUDGET),
    "IMGW_SEND_QUEUE_MAX_BYTES": str(4 * BUDGET),
    "IMGW_SYNC_DRAIN_TIMEOUT_S": "3",
}


async def _open(im: Im, ws_url: str, user: str, cursors: dict[str, int]) -> ClientConnection:
    """A session whose socket reads little: a 4 KiB receive buffer and a one-frame queue, so
    the gateway sees the backpressure of a client that stops reading."""
    parts = urlsplit(ws_url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    ws = await connect(
        ws_url,
        sock=sock,
        max_queue=1,
        max_size=2**20,
        compression=None,
        additional_headers={"Authorization": f"Bearer {im.token(user)}"},
    )
    hello = {"op": "hello", "device_id": "slow", "sync": {"cursors": cursors}}
    await ws.send(json.dumps(hello))
    return ws


def test_a_sync_pages_for_a_slow_reader_and_closes_one_that_never_reads(
    im: Im, tmp_path: Path
) -> None:
    alice, bob = im.uid("pace-a"), im.uid("pace-b")
    conv = dm_conversation(alice, bob)

    async def scenario() -> None:
        sender = im.client(alice)
        await sender.connect()
        for _ in range(MESSAGES):
            await sender.send(BODY, to=bob)
        await sender.wait_until(lambda: not sender.unacked, 60, "every send acked")

        with extra_gateway(im.stack, im.uid("gw-pace"), SETTINGS, tmp_path) as (ws_url, http):
            # Never reads: the gateway queues no more than the budget (plus one frame in
            # flight), then closes the session when nothing is read for the drain timeout.
            stuck = await _open(im, ws_url, bob, {conv: 0})
            peak = 0.0

            def closed_as_slow() -> bool:
                nonlocal peak
                metrics = im.metrics(http)
                peak = max(peak, metrics["im_gateway_send_queue_bytes"])
                return metrics['im_gateway_disconnects_total{reason="slow_consumer"}'] >= 1

            wait_for("the stuck session closed as a slow consumer", closed_as_slow, timeout=30)
            assert 0 < peak <= BUDGET + 65536, peak
            stuck.transport.abort()

            # Reads slowly: every message arrives, in order, then sync_done.
            slow = await _open(im, ws_url, bob, {conv: 0})
            seqs: list[int] = []
            frame: dict[str, Any] = {}
            async with asyncio.timeout(60):
                while frame.get("op") != "sync_done":
                    frame = json.loads(await slow.recv())
                    if frame["op"] == "sync_batch":
                        seqs += [m["seq"] for m in frame["messages"]]
                        await asyncio.sleep(0.05)
            assert seqs == list(range(1, MESSAGES + 1))
            assert frame["conversations"][conv]["complete"] is True
            await slow.close()
            assert im.metrics(http)['im_gateway_disconnects_total{reason="slow_consumer"}'] == 1

    im.run(scenario)
