"""A WebSocket-aware TCP proxy for load-test tests: delays, drops, duplicates or reorders the
gateway's ``message`` frames on their way to the client. Runs an asyncio loop in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Faults:
    delay_s: float = 0.0  # added to every server -> client byte
    drop_every: int = 0  # drop every n-th message frame
    duplicate_every: int = 0  # send every n-th message frame twice
    swap_every: int = 0  # hold every n-th message frame and send it after the next one
    # A gateway that saturates: with more open connections than this, add overload_delay_s.
    overload_above: int = 0
    overload_delay_s: float = 0.0
    counts: dict[str, int] = field(
        default_factory=lambda: {"drop": 0, "dup": 0, "swap": 0, "stranded": 0}
    )  # stranded: held for a swap, but no later message of its conversation came


def _frames(buffer: bytearray) -> Iterator[bytes]:
    while len(buffer) >= 2:
        length = buffer[1] & 0x7F
        offset = 2
        if length == 126:
            if len(buffer) < 4:
                return
            length = struct.unpack_from("!H", buffer, 2)[0]
            offset = 4
        elif length == 127:
            if len(buffer) < 10:
                return
            length = struct.unpack_from("!Q", buffer, 2)[0]
            offset = 10
        if len(buffer) < offset + length:
            return
        frame = bytes(buffer[: offset + length])
        del buffer[: offset + length]
        yield frame


def _message_conversation(frame: bytes) -> str | None:
    """The conversation of a ``message`` frame; None for any other frame."""
    if frame[0] & 0x0F != 0x1:
        return None
    offset = {126: 4, 127: 10}.get(frame[1] & 0x7F, 2)
    try:
        parsed = json.loads(frame[offset:])
    except ValueError:
        return None
    return str(parsed["conversation_id"]) if parsed.get("op") == "message" else None


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, faults: Faults) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.faults = faults
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._seen = 0
        self.active = 0

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=5)
        return self

    def __exit__(self, *_: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        tasks = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._downstream(up_reader, writer)),
        ]
        self.active += 1
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.active -= 1
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send_later(queue, writer))
        held: bytes | None = None
        try:
            head = bytearray()
            while b"\r\n\r\n" not in head:  # the HTTP upgrade response passes untouched
                chunk = await reader.read(4096)
                if not chunk:
                    return
                head += chunk
            response, _, rest = bytes(head).partition(b"\r\n\r\n")
            self._emit(queue, response + b"\r\n\r\n")
            buffer = bytearray(rest)
            held_conversation: str | None = None
            while True:
                for frame in _frames(buffer):
                    conversation = _message_conversation(frame)
                    if conversation is None:
                        self._emit(queue, frame)
                        continue
                    self._seen += 1
                    f = self.faults
                    if f.drop_every and self._seen % f.drop_every == 0:
                        f.counts["drop"] += 1
                        continue
                    if f.swap_every and held is None and self._seen % f.swap_every == 0:
                        held, held_conversation = frame, conversation
                        continue
                    self._emit(queue, frame)
                    if f.duplicate_every and self._seen % f.duplicate_every == 0:
                        f.counts["dup"] += 1
                        self._emit(queue, frame)
                    if held is not None and conversation == held_conversation:
                        f.counts["swap"] += 1
                        self._emit(queue, held)
                        held = None
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buffer += chunk
        finally:
            if held is not None:
                self.faults.counts["stranded"] += 1
            await queue.put((0.0, b""))
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    def _emit(self, queue: asyncio.Queue[tuple[float, bytes]], data: bytes) -> None:
        delay = self.faults.delay_s
        if self.faults.overload_above and self.active > self.faults.overload_above:
            delay += self.faults.overload_delay_s
        queue.put_nowait((self._loop.time() + delay, data))

    async def _send_later(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            wait = due - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
