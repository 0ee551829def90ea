"""Dedup of client sends (state.dedup_key): the claim made before producing and the 'durable'
mark after Kafka acknowledged, batched over all sessions.

Claims and marks of one event-loop turn are written together in one Redis pipeline, instead of
a round trip and a pool checkout per message.
"""

from __future__ import annotations

import asyncio

from gateway.backends import Backends
from gateway.config import Config


class DedupWriter:
    def __init__(self, config: Config, backends: Backends) -> None:
        self._ttl_s = config.dedup_ttl_s
        self._backends = backends
        self._claims: list[tuple[str, str, asyncio.Future[str | None]]] = []
        self._marks: list[tuple[str, str]] = []
        self._task: asyncio.Task[None] | None = None

    def claim(self, key: str, value: str) -> asyncio.Future[str | None]:
        """SET key value NX GET, batched with the other sessions' claims of this loop turn:
        resolves to the previous value, or None when this claim is the first."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._claims.append((key, value, future))
        self._schedule()
        return future

    def mark_durable(self, key: str, value: str) -> None:
        """'Acknowledged' marks ride along with the next claims pipeline, off the hot path."""
        self._marks.append((key, value))
        self._schedule()

    def _schedule(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        try:
            while self._claims or self._marks:
                await asyncio.sleep(0)  # let the frames and acks of this loop turn join
                claims, self._claims = self._claims, []
                marks, self._marks = self._marks, []
                try:
                    async with self._backends.redis.pipeline(transaction=False) as pipe:
                        for key, value, _ in claims:
                            pipe.set(key, value, nx=True, ex=self._ttl_s, get=True)
                        for key, value in marks:
                            pipe.set(key, value, xx=True, keepttl=True)
                        results = await pipe.execute(raise_on_error=False)
                except Exception as exc:  # lost marks only mean a resend re-produces
                    results = [exc] * (len(claims) + len(marks))
                for (_, _, future), result in zip(claims, results, strict=False):
                    if future.done():  # the session went away meanwhile
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(ConnectionError(repr(result)))
                    else:
                        future.set_result(result)
        finally:
            self._task = None
