"""Drain on SIGTERM: stop admitting, then tell every session to reconnect elsewhere, paced over
the drain window in a random order (never a reconnect storm), and stop the server when the last
session is gone or the window is over (docs/protocol.md, section 7.5)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from gateway.config import Config
from gateway.limits import drain_schedule
from gateway.metrics import GatewayMetrics
from gateway.protocol import CloseCode, encode
from gateway.runtime import Tasks
from gateway.session import Outbox, SessionTable

log = logging.getLogger(__name__)


@dataclass(kw_only=True, slots=True, eq=False)
class Drain:
    config: Config
    metrics: GatewayMetrics
    table: SessionTable
    outbox: Outbox
    tasks: Tasks
    stop: asyncio.Event
    active: bool = field(default=False, init=False)

    def begin(self) -> None:
        if self.active:
            return
        log.info(
            "SIGTERM: draining %d sessions over %.1fs",
            len(self.table.sessions),
            self.config.drain_window_s,
        )
        self.active = True
        self.metrics.draining.set(1)
        self.tasks.spawn(self._run())

    async def _run(self) -> None:
        window = self.config.drain_window_s
        started = time.monotonic()
        sessions = list(self.table.sessions)
        random.shuffle(sessions)
        for session, offset in zip(sessions, drain_schedule(len(sessions), window), strict=True):
            delay = started + offset - time.monotonic()
            if delay > 0.02:
                await asyncio.sleep(delay)
            if session.close_reason is not None or session not in self.table.sessions:
                continue
            frame = {
                "op": "reconnect",
                "reason": "draining",
                "retry_after_ms": random.randint(0, 1000),
            }
            self.outbox.push(session, encode(frame), "reconnect")
            session.close_reason = "drain"
            self.outbox.close_soon(session, CloseCode.RECONNECT, "reconnect elsewhere")
        deadline = started + window
        while self.table.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.stop.set()
