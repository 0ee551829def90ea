"""This node's Redis subscription: its own channel (deliveries and receipt events) and the
presence channel, each payload decoded (gateway/state.py) and handed to its handler.

Pub/sub loses what is published while nobody listens, so after a lost subscription (or one that
redis-py quietly re-established) every route is registered again and the sessions that may have
missed something are asked to sync: those open now that have not started a sync since we listen
again. Not all at once (a sync storm onto Cassandra from every gateway): in a random order,
spread over IMGW_RESYNC_WINDOW_S and at most IMGW_RESYNC_MAX_PER_S.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import redis_client, state
from gateway.backends import Backends
from gateway.config import Config
from gateway.metrics import GatewayMetrics
from gateway.protocol import encode
from gateway.routes import Routes
from gateway.runtime import Tasks, backoff
from gateway.session import Outbox, Session, SessionTable

log = logging.getLogger(__name__)


@dataclass(kw_only=True, slots=True, eq=False)
class PubSub:
    config: Config
    metrics: GatewayMetrics
    backends: Backends
    routes: Routes
    table: SessionTable
    outbox: Outbox
    on_delivery: Callable[[list[state.DeliveryItem]], None]
    on_receipt: Callable[[state.ReceiptEvent], None]
    on_presence: Callable[[state.PresenceEvent], None]
    tasks: Tasks
    channel: str = field(init=False)
    _resync: asyncio.Future[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.channel = state.node_channel(self.config.node_id)

    async def loop(self, stop: asyncio.Event) -> None:
        backends = self.backends
        attempt = 0
        first = True
        while not stop.is_set():
            subscription = redis_client.Subscription(
                backends.redis, [self.channel, state.PRESENCE_CHANNEL]
            )
            try:
                await subscription.open()
                if not first:
                    await self.recovered()
                first = False
                backends.pubsub_ok = True
                attempt = 0
                await subscription.run(self.on_message, self._resubscribed)
                raise ConnectionError("pub/sub ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if backends.pubsub_ok:
                    log.warning("redis pub/sub lost: %r", exc)
                backends.pubsub_ok = False
                first = False
                await asyncio.sleep(backoff(attempt))
                attempt += 1
            finally:
                await subscription.aclose()

    async def recovered(self) -> None:
        """Listening again after a gap: re-register every route, then tell the sessions that
        may have missed deliveries (they were published while nobody listened)."""
        self.metrics.pubsub_reconnects.inc()
        since = time.monotonic()
        await self.routes.refresh()
        if self._resync is not None:
            self._resync.cancel()  # a newer gap: everyone open now is told again
        self._resync = self.tasks.spawn(self.tell_to_sync(since))

    def _resubscribed(self) -> None:
        log.warning("redis pub/sub was re-established by the client: deliveries may be lost")
        self.tasks.spawn(self.recovered())

    async def tell_to_sync(self, since: float) -> None:
        """``sync_required`` to every session open now that has not started a sync since
        ``since`` (monotonic), in a random order spread over the resync window."""
        sessions = list(self.table.sessions)
        random.shuffle(sessions)
        pace = max(
            self.config.resync_window_s / max(len(sessions), 1), 1 / self.config.resync_max_per_s
        )
        frame = encode({"op": "sync_required", "reason": "backend_recovered"})
        for session in sessions:
            await asyncio.sleep(random.uniform(0, 2 * pace))  # jitter, pace on average
            if self._missed(session, since):
                self.outbox.push(session, frame, "sync_required")
                self.metrics.resync_notices.inc()

    def _missed(self, session: Session, since: float) -> bool:
        return (
            session.close_reason is None
            and session in self.table.sessions
            and session.sync_started_at < since
        )

    def on_message(self, channel: str, data: str) -> None:
        try:
            if channel == self.channel:
                message = state.decode_node_message(data)
                if isinstance(message, state.Delivery):
                    self.on_delivery(message.items)
                elif isinstance(message, state.ReceiptEvent):
                    self.on_receipt(message)
            else:
                self.on_presence(state.decode_presence(data))
        except Exception:
            log.exception("bad pub/sub payload on %s", channel)
