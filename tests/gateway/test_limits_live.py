"""The per-IP, before-authentication and per-user limits on a real gateway of the local stack
(docs/protocol.md 1 and 7.2): each refusal with its documented status or close code, counted."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.gateway.conftest import Im
from tests.gateway.support import extra_gateway

pytestmark = pytest.mark.integration

SETTINGS = {
    "IMGW_MAX_PENDING_HELLOS": "2",
    "IMGW_MAX_CONNECTIONS_PER_IP": "3",
    "IMGW_MAX_SESSIONS_PER_USER": "2",
    "IMGW_HELLO_TIMEOUT_S": "30",
}


async def _refusal(ws_url: str) -> tuple[int, bytes]:
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url, open_timeout=10)
    response = refused.value.response
    return response.status_code, response.body


async def _upgrade(ws_url: str, token: str) -> ClientConnection:
    """Retries while the pre-auth slots of sockets just closed are not yet given back."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"})
        except InvalidStatus as exc:
            if exc.response.body != b"preauth_limit\n" or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _hello(ws: ClientConnection, device: str) -> str:
    """The op of the first answer to hello, or the close code as a string."""
    await ws.send(json.dumps({"op": "hello", "device_id": device}))
    try:
        return str(json.loads(await ws.recv())["op"])
    except ConnectionClosed as closed:
        return str(closed.rcvd.code if closed.rcvd is not None else "no close frame")


def test_pre_auth_per_ip_and_per_user_limits(im: Im, tmp_path: Path) -> None:
    alice = im.uid("limits-a")
    with extra_gateway(im.stack, im.uid("gw-limits"), SETTINGS, tmp_path) as (ws_url, http):

        async def scenario() -> None:
            # Two sockets that never say hello take the pre-auth slots: the next is refused.
            silent = [await connect(ws_url) for _ in range(2)]
            assert await _refusal(ws_url) == (503, b"preauth_limit\n")
            for ws in silent:
                await ws.close()
            # Two devices of one user are fine, a third is closed with 4011; the first device
            # again replaces its own session and does not count twice.
            token = im.token(alice)
            d1 = await _upgrade(ws_url, token)
            assert await _hello(d1, "d1") == "welcome"
            d2 = await _upgrade(ws_url, token)
            assert await _hello(d2, "d2") == "welcome"
            d3 = await _upgrade(ws_url, token)
            assert await _hello(d3, "d3") == "4011"
            d1_again = await _upgrade(ws_url, token)
            assert await _hello(d1_again, "d1") == "welcome"
            # d1_again and d2 are open from this IP, one more silent socket makes three.
            extra = await _upgrade(ws_url, token)
            assert await _refusal(ws_url) == (429, b"ip_limit\n")
            for ws in (d1, d2, d1_again, extra):
                await ws.close()

        im.run(scenario)
        metrics = im.metrics(http)
    for outcome in ("preauth_limit", "ip_limit", "user_limit"):
        assert metrics[f'im_gateway_connects_total{{reason="{outcome}"}}'] == 1, outcome
