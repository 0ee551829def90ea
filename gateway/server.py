"""The IM gateway: WebSocket sessions at /ws, plus /healthz, /readyz and /metrics on the same port.

Run: ``python -m gateway.server``. The protocol is specified in docs/protocol.md.

This module only wires the parts together and runs them; each part owns one concern:

==========================  ====================================================================
gateway/admission.py        HTTP routes, upgrade refusals, hello and its token
gateway/connection.py       a connection's life: open, frame loop, close; the idle/expiry sweep
gateway/session.py          Session, the table of sessions, the outbox (push, flush)
gateway/send.py             send frames: dedup claim, produce to Kafka, ack
gateway/dedup.py            dedup claims and marks, batched per event-loop turn
gateway/delivery.py         sync and live deliveries, and the hold between the two
gateway/receipts.py         receipt frames and receipt events
gateway/routes.py           route registry and presence
gateway/group_frames.py     group frames (membership: gateway/groups.py)
gateway/pubsub.py           this node's Redis subscription
gateway/backends.py         Redis, Kafka and Cassandra clients and their health
gateway/drain.py            the paced drain on SIGTERM
gateway/state.py            every Redis key, value and pub/sub payload format
==========================  ====================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from websockets.asyncio.server import serve

from gateway.admission import Admission
from gateway.auth import TokenVerifier
from gateway.backends import Backends
from gateway.config import Config, load_or_exit
from gateway.connection import Connections
from gateway.dedup import DedupWriter
from gateway.delivery import Deliveries
from gateway.drain import Drain
from gateway.group_frames import GroupFrames
from gateway.metrics import GatewayMetrics
from gateway.pubsub import PubSub
from gateway.receipts import Receipts
from gateway.routes import PresenceWatch, Routes
from gateway.runtime import Tasks, setup_logging
from gateway.send import Sender
from gateway.session import CLOSE_TIMEOUT_S, WRITE_LIMIT, Outbox, SessionTable

log = logging.getLogger("gateway.server")


class Gateway:
    def __init__(self, config: Config, verifier: TokenVerifier) -> None:
        self.cfg = config
        self.metrics = metrics = GatewayMetrics()
        self.verifier = verifier
        if verifier.keys is not None:
            verifier.keys.on_refresh = lambda outcome: metrics.jwks_refreshes.labels(outcome).inc()
        self.stop = asyncio.Event()
        self.tasks = tasks = Tasks()
        self.table = table = SessionTable()
        self.outbox = outbox = Outbox(config, metrics, tasks)
        self.backends = backends = Backends(config, metrics, tasks)
        self.drain = Drain(
            config=config, metrics=metrics, table=table, outbox=outbox, tasks=tasks, stop=self.stop
        )
        self.admission = Admission(
            config=config,
            verifier=verifier,
            metrics=metrics,
            backends=backends,
            table=table,
            outbox=outbox,
            drain=self.drain,
        )
        routes = Routes(config, backends, table)
        presence = PresenceWatch(routes, outbox)
        deliveries = Deliveries(
            config=config, metrics=metrics, backends=backends, table=table, outbox=outbox
        )
        receipts = Receipts(
            metrics=metrics, backends=backends, routes=routes, table=table, outbox=outbox
        )
        dedup = DedupWriter(config, backends)
        sender = Sender(
            config=config, metrics=metrics, backends=backends, outbox=outbox, dedup=dedup
        )
        self.connections = Connections(
            config=config,
            metrics=metrics,
            admission=self.admission,
            table=table,
            outbox=outbox,
            routes=routes,
            presence=presence,
            deliveries=deliveries,
            sender=sender,
            receipts=receipts,
            group_frames=GroupFrames(config, backends, outbox),
        )
        self.pubsub = PubSub(
            config=config,
            metrics=metrics,
            backends=backends,
            routes=routes,
            table=table,
            outbox=outbox,
            on_delivery=deliveries.on_delivery,
            on_receipt=receipts.on_event,
            on_presence=presence.on_event,
            tasks=tasks,
        )

    async def start_backends(self) -> None:
        if not await self.backends.connect(self.stop):
            return
        for loop in (
            self.pubsub.loop(self.stop),
            self.backends.health_loop(self.stop),
            self.backends.map_epoch_loop(self.stop),
            self.connections.sweep_loop(self.stop),
        ):
            self.tasks.spawn(loop)
        log.info("backends connected")

    async def shutdown(self) -> None:
        for session in list(self.table.sessions):
            session.close_reason = session.close_reason or "shutdown"
        await self.backends.stop_producer()
        self.tasks.cancel_all()
        await self.backends.close()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.drain.begin)
        loop.add_signal_handler(signal.SIGINT, self.drain.begin)
        server = await serve(
            self.connections.handler,
            self.cfg.listen_host,
            self.cfg.listen_port,
            process_request=self.admission.process_request,
            max_size=self.cfg.max_frame_bytes,
            max_queue=4,
            write_limit=WRITE_LIMIT,
            compression=None,  # per-message deflate costs ~100 KiB per connection
            ping_interval=None,  # application-level heartbeat, see docs/protocol.md
            close_timeout=CLOSE_TIMEOUT_S,
            open_timeout=10,
            backlog=4096,
        )
        log.info("listening on %s:%s", self.cfg.listen_host, self.cfg.listen_port)
        self.tasks.spawn(self.verifier.refresh_loop(self.stop))  # JWKS reload (gateway/jwks.py)
        starter = asyncio.ensure_future(self.start_backends())
        await self.stop.wait()
        starter.cancel()
        server.close(close_connections=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT_S + 0.5)
        await self.shutdown()
        log.info("drained, exiting")
        return 0


def main() -> None:
    config = load_or_exit("gateway")
    setup_logging(config.log_level, config.node_id)
    try:
        verifier = TokenVerifier.from_config(config)
    except (ValueError, OSError) as exc:
        print(f"gateway: invalid configuration:\n  IMGW_JWT_*: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(asyncio.run(Gateway(config, verifier).run()))


if __name__ == "__main__":
    main()
