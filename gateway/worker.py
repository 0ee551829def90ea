"""What the dispatcher and the relay share: Kafka consumer processes that write to Cassandra and
Redis, serve only /healthz, /readyz and /metrics on their port, and stop on SIGTERM.

``KafkaWorker`` holds their common state (config, metrics, store, Redis, consumer, the stop
event), the HTTP routes, a sleep that ends early on stop, and connecting with backoff: Redis at
once, then Cassandra, then a Kafka consumer and producer (``start_kafka``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from gateway import redis_client, state
from gateway.config import Config
from gateway.metrics import DispatcherMetrics, RelayMetrics
from gateway.runtime import backoff, http_route, in_daemon_thread, request_path
from gateway.store import CassandraStore


class KafkaWorker:
    """Base of the dispatcher and the relay; ``name`` names the process in logs and refusals."""

    name: str

    def __init__(self, config: Config, metrics: DispatcherMetrics | RelayMetrics) -> None:
        self.cfg = config
        self.metrics = metrics
        self.log = logging.getLogger(f"gateway.{self.name}")
        self.store = CassandraStore.of_config(config)
        self.redis: Any = None
        self.consumer: Any = None
        self.stopping = asyncio.Event()
        self.stage = "idle"  # the batch step in progress, for the failure metric
        self._max_seq: Any = None

    # HTTP --------------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        raise NotImplementedError

    def serve(self) -> serve:
        """The HTTP server on the listen port (``async with``); WebSocket upgrades are refused."""
        return serve(
            self._no_websocket,
            self.cfg.listen_host,
            self.cfg.listen_port,
            process_request=self.process_request,
            ping_interval=None,
        )

    def process_request(self, connection: ServerConnection, request: Request) -> Response:
        path = request_path(request)
        response = http_route(connection, path, ready=self.readiness, render_metrics=self._render)
        return response or connection.respond(404, "not found\n")

    def _render(self) -> bytes:
        self.metrics.ready.set(1 if self.readiness()[0] else 0)
        return self.metrics.render()

    async def _no_websocket(self, connection: ServerConnection) -> None:
        await connection.close(1008, f"the {self.name} serves only /healthz, /readyz and /metrics")

    # Connecting --------------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _retry(
        self, attempt: Callable[[], Awaitable[object]], *, until: Callable[[], bool], failure: str
    ) -> None:
        """Await ``attempt()`` until ``until()`` holds or we are stopping; each failure is logged
        as ``<failure>: <exception>`` and followed by a backoff."""
        attempts = 0
        while not self.stopping.is_set() and not until():
            try:
                await attempt()
            except Exception as exc:
                self.log.warning("%s: %r", failure, exc)
                await self._sleep(backoff(attempts))
                attempts += 1

    async def connect_redis_and_store(self) -> None:
        """Redis (and the MAX_SEQ script) at once, then Cassandra, retried until it answers."""
        self.redis = redis_client.connect_config(self.cfg, max_connections=16, timeout_s=5)
        self._max_seq = self.redis.register_script(state.MAX_SEQ)
        await self._retry(
            lambda: in_daemon_thread(self.store.connect),
            until=lambda: self.store.ready,
            failure="cassandra not reachable yet",
        )

    async def start_kafka(
        self,
        build: Callable[[], tuple[Any, Any]],
        start: Callable[[Any, Any], Awaitable[None]],
    ) -> tuple[Any, Any] | None:
        """A consumer and a producer from ``build()``, started by ``start``; on failure both are
        stopped and new ones built after a backoff. None when we are stopping first."""
        attempts = 0
        while not self.stopping.is_set():
            consumer, producer = build()
            try:
                await start(consumer, producer)
            except Exception as exc:
                self.log.warning("kafka not reachable yet: %r", exc)
                for client in (consumer, producer):
                    with contextlib.suppress(Exception):
                        await client.stop()
                await self._sleep(backoff(attempts))
                attempts += 1
                continue
            return consumer, producer
        return None
