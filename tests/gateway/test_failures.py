"""Failure drills under load against the real stack: SIGKILL a gateway, restart the dispatcher,
restart Redis. Afterwards every acknowledged message is on every member device exactly once
(delivered live or synced), none lost, none duplicated, seqs without holes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time

import httpx
import pytest

from tests.gateway.conftest import Im
from tests.gateway.protocol_client import ProtocolClient, dm
from tests.support import wait_for

pytestmark = pytest.mark.integration


async def _load(senders: list[tuple[ProtocolClient, str]], stop: asyncio.Event) -> None:
    """Each sender sends to its peer every ~25 ms until stopped (resends are the client's)."""
    i = 0
    while not stop.is_set():
        for client, peer in senders:
            if client.connected.is_set():
                await client.send(f"{client.user}#{i}", to=peer)
        i += 1
        await asyncio.sleep(0.025)


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    return False


async def _check_exactly_once(devices: list[ProtocolClient], conv: str, expected: set[str]) -> None:
    for device in devices:
        await device.wait_until(
            lambda d=device: (
                {d.messages[k]["message_id"] for k in d.messages if k[0] == conv} >= expected
            ),
            60,
            f"all {len(expected)} acked messages of {conv}",
        )
    for device in devices:
        seqs = sorted(seq for c, seq in device.messages if c == conv)
        ids = [device.messages[(conv, s)]["message_id"] for s in seqs]
        assert len(ids) == len(set(ids)), f"{device.device}: a message got two seqs"
        assert seqs == list(range(1, len(seqs) + 1)), "hole in the sequence"
        assert set(ids) == expected, "unacknowledged extra or missing messages"
        assert device.duplicates_on_one_connection() == []


def test_kill_gateway_restart_dispatcher_and_redis_under_load(im: Im) -> None:
    stack = im.stack
    users = [im.uid(f"u{i}") for i in range(4)]
    pairs = [(users[0], users[1]), (users[2], users[3])]

    async def in_thread(fn: object, *args: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, fn, *args)  # type: ignore[arg-type]

    async def scenario() -> None:
        devices: dict[str, list[ProtocolClient]] = {}
        for n, user in enumerate(users):
            # Two devices per user, on different gateways, so a gateway crash hits everybody.
            devices[user] = [im.client(user, f"dev{k}", gateway=(n + k) % 2) for k in range(2)]
            for device in devices[user]:
                device.urls = im.urls  # reconnect to any gateway
                await device.connect()
        senders = [(devices[a][0], b) for a, b in pairs] + [(devices[b][1], a) for a, b in pairs]
        stop = asyncio.Event()
        load = asyncio.create_task(_load(senders, stop))
        await asyncio.sleep(2)
        await in_thread(stack.kill, "gw-1")
        await asyncio.sleep(2)
        await in_thread(stack.start, "gw-1")
        await asyncio.sleep(1)
        await in_thread(stack.restart, "dispatcher")
        await asyncio.sleep(2)
        await in_thread(stack.restart, "redis")
        for base in stack.info.gateway_http_urls:
            # In a thread: the clients keep reading (and reconnecting) meanwhile.
            probe = functools.partial(_ready, base)
            await asyncio.to_thread(wait_for, f"{base} ready", probe, timeout=30, interval=0.2)
        await asyncio.sleep(2)
        stop.set()
        await load
        everyone = [d for ds in devices.values() for d in ds]
        for client, _ in senders:
            await client.wait_until(lambda c=client: not c.unacked, 60, "every send acked")
        for device in everyone:
            await device.wait_until(lambda d=device: d.connected.is_set(), 30, "reconnected")
            await device.sync()  # the client rule after failures: sync from the cursors
        acked = {cl.user: {a["message_id"] for a in cl.acks.values()} for cl, _ in senders}
        for a, b in pairs:
            await _check_exactly_once(
                devices[a] + devices[b], dm(a, b), acked.get(a, set()) | acked.get(b, set())
            )
        sent = sum(len(ids) for ids in acked.values())
        assert sent > 200  # the load really ran through the failures
        kinds = {code for d in everyone for code in d.close_codes}
        assert kinds  # the drills did disconnect clients

    async def main() -> None:
        try:
            await scenario()
        finally:
            await im.close_all()
            await in_thread(stack.up)

    asyncio.run(main())


def test_sigterm_drains_with_reconnect_frames_and_exits_in_time(im: Im) -> None:
    stack = im.stack
    window = float(stack.imgw_env()["IMGW_DRAIN_WINDOW_S"])

    async def scenario() -> None:
        clients = [im.client(im.uid(f"d{i}"), gateway=1) for i in range(20)]
        for client in clients:
            client.auto_reconnect = False
            await client.connect()
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, stack.stop, "gw-2")
        took = time.monotonic() - started
        assert took < window + 5, f"gw-2 took {took:.1f}s to exit"
        for client in clients:
            await client.wait_until(lambda c=client: c.close_codes, 5, "close")
        told = [c for c in clients if c.reconnect_frames]
        assert len(told) == len(clients)
        assert {c.close_codes[-1] for c in clients} == {4009}
        retry = [c.reconnect_frames[0]["retry_after_ms"] for c in told]
        assert all(0 <= r <= 1000 for r in retry)
        # Paced: the reconnect frames were spread over the window, not sent at once.
        arrivals = sorted(t for c in told for t, op in c.arrivals if op == "reconnect")
        assert arrivals[-1] - arrivals[0] > window * 0.8 * 0.5

    async def main() -> None:
        try:
            await scenario()
        finally:
            await im.close_all()
            await asyncio.get_running_loop().run_in_executor(None, stack.up)

    asyncio.run(main())
