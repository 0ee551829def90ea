"""This node's Redis subscription: its own channel (deliveries and receipt events) and the
presence channel, each payload decoded (gateway/state.py) and handed to its handler.

Pub/sub loses what is published while nobody listens, so after a lost subscription every route
is registered again and every session is asked to sync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import redis_client, state
from gateway.backends import Backends
from gateway.config import Config
from gateway.metrics import GatewayMetrics
from gateway.protocol import encode
from gateway.routes import Routes
from gateway.runtime import backoff
from gateway.session import Outbox, SessionTable

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
    channel: str = field(init=False)

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
                    # Redis came back: re-register every route, then ask every device to sync,
                    # since deliveries published while we were unsubscribed are gone.
                    await self.routes.refresh()
                    self.metrics.pubsub_reconnects.inc()
                    frame = encode({"op": "sync_required", "reason": "backend_recovered"})
                    for session in list(self.table.sessions):
                        self.outbox.push(session, frame, "sync_required")
                first = False
                backends.pubsub_ok = True
                attempt = 0
                await subscription.run(self.on_message)
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
