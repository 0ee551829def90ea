"""The slow-reader flood: clients that never read their socket, asking for sync after sync of a
busy conversation, while a sender keeps writing to them. The gateway must close them
(``slow_consumer``) and stay up for everybody else; the probe checks the everybody else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from opsctl.drill._probe import Credentials, dm

SLOW_READERS = 20
SENDERS = 4
BODY_BYTES = 8000  # a sync of a busy conversation is then a large frame
# Both well under the gateway's per-connection rate limit (IMGW_RATE_LIMIT_PER_S, 50/s): the
# readers must be closed for reading slowly, not for flooding.
SYNC_EVERY_S = 0.1
SEND_EVERY_S = 0.05
# websockets stops reading the socket once this many frames wait unread, and a small kernel
# receive buffer makes TCP push back at once instead of after megabytes.
UNREAD_FRAMES = 1
RECEIVE_BUFFER = 4096


@dataclass
class FloodFigures:
    connects: int = 0
    closes: Counter[int] = field(default_factory=Counter)  # close code -> count
    syncs_sent: int = 0
    messages_sent: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connects": self.connects,
            "closes": {str(k): v for k, v in self.closes.items()},
            "syncs_sent": self.syncs_sent,
            "messages_sent": self.messages_sent,
        }


class Flood:
    """Runs in its own thread and event loop between ``start`` and ``stop``."""

    def __init__(self, urls: list[str], credentials: Credentials, suffix: str) -> None:
        self.urls = urls
        self.credentials = credentials
        self.senders = [f"drill-flooder{i}-{suffix}" for i in range(SENDERS)]
        self.readers = [f"drill-slow{i}-{suffix}" for i in range(SLOW_READERS)]
        self.figures = FloodFigures()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._open_connections: set[ClientConnection] = set()
        self._thread = threading.Thread(target=self._main, name="drill-flood", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._flood())
        self._loop.close()

    async def _flood(self) -> None:
        self._stop = asyncio.Event()
        tasks = [
            asyncio.create_task(self._send_forever(sender, i))
            for i, sender in enumerate(self.senders)
        ]
        tasks += [
            asyncio.create_task(self._slow_reader(user, self.urls[i % len(self.urls)]))
            for i, user in enumerate(self.readers)
        ]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        for ws in list(self._open_connections):
            ws.transport.abort()  # a reader that never reads would hold a close handshake up
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    async def _open(self, user: str, url: str, max_queue: int | None) -> ClientConnection:
        sock = None
        if max_queue is not None:  # a slow reader: a small receive buffer, set before connect
            parts = urlsplit(url)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(
                    sock, (parts.hostname or "127.0.0.1", parts.port or 80)
                )
            except OSError:
                sock.close()
                raise
        ws = await connect(
            url,
            sock=sock,
            additional_headers={"Authorization": f"Bearer {self.credentials.token(user)}"},
            max_size=2**24,
            max_queue=max_queue,
            compression=None,
            open_timeout=10,
        )
        self._open_connections.add(ws)
        await ws.send(json.dumps({"op": "hello", "device_id": "flood", "ref": "hello"}))
        self.figures.connects += 1
        return ws

    async def _send_forever(self, sender: str, index: int) -> None:
        """A normal (reading) client writing big messages to every slow reader."""
        body = "x" * BODY_BYTES
        while True:
            try:
                ws = await self._open(sender, self.urls[index % len(self.urls)], None)
                drain = asyncio.create_task(self._discard(ws))
                try:
                    i = 0
                    while True:
                        to = self.readers[i % len(self.readers)]
                        cmid = f"{sender}-{i}-{time.monotonic_ns()}"
                        frame = {"op": "send", "client_msg_id": cmid, "body": body, "to": to}
                        await ws.send(json.dumps(frame))
                        self.figures.messages_sent += 1
                        i += 1
                        await asyncio.sleep(SEND_EVERY_S)
                finally:
                    drain.cancel()
            except (OSError, InvalidHandshake, InvalidURI, ConnectionClosed, TimeoutError):
                await asyncio.sleep(0.5)

    @staticmethod
    async def _discard(ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    async def _slow_reader(self, user: str, url: str) -> None:
        """Connect, then only write: sync after sync of its busy conversation, never reading
        a reply; when the gateway closes it, come back (a hostile client does)."""
        convs = {dm(sender, user): 0 for sender in self.senders}
        while True:
            try:
                ws = await self._open(user, url, UNREAD_FRAMES)
            except (OSError, InvalidHandshake, InvalidURI, ConnectionClosed, TimeoutError):
                await asyncio.sleep(0.5)
                continue
            try:
                n = 0
                while True:
                    frame = {"op": "sync", "cursors": convs, "ref": f"s{n}"}
                    await ws.send(json.dumps(frame))
                    self.figures.syncs_sent += 1
                    n += 1
                    await asyncio.sleep(SYNC_EVERY_S)
            except ConnectionClosed:
                code = ws.close_code if ws.close_code is not None else 1006
                self.figures.closes[code] += 1
                await asyncio.sleep(0.5)
