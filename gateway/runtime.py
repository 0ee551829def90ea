"""Process plumbing shared by the gateway and the dispatcher: logging, the plain-HTTP routes
(/healthz, /readyz, /metrics) served on the WebSocket port, backoff and background tasks."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from gateway.metrics import CONTENT_TYPE

HEALTH_PATHS = ("/healthz", "/readyz", "/metrics")
T = TypeVar("T")


def setup_logging(level: str, node_id: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format=f"%(asctime)s %(levelname)s {node_id} %(name)s: %(message)s",
    )
    # websockets logs every refused handshake (plain HTTP probes, 503s) at INFO/ERROR.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("cassandra").setLevel(logging.WARNING)


def http_route(
    connection: ServerConnection,
    path: str,
    *,
    ready: Callable[[], tuple[bool, str]],
    render_metrics: Callable[[], bytes],
) -> Response | None:
    """Answer a health/metrics path, or None when ``path`` is not one of them."""
    if path == "/healthz":
        return connection.respond(200, "ok\n")
    if path == "/readyz":
        ok, why = ready()
        return connection.respond(200 if ok else 503, ("ready" if ok else why) + "\n")
    if path == "/metrics":
        response = connection.respond(200, render_metrics().decode())
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = CONTENT_TYPE
        return response
    return None


def request_path(request: Request) -> str:
    return request.path.split("?", 1)[0]


def backoff(attempt: int, base: float = 0.2, cap: float = 5.0) -> float:
    """Full-jitter exponential backoff in seconds."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 10)))


def in_daemon_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run a blocking call in a daemon thread. Unlike the default executor, a call stuck on a
    dead backend never delays process exit (the drain deadline matters more)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name="blocking-call", daemon=True).start()
    return future


class Tasks:
    """Fire-and-forget tasks, referenced until they finish (the event loop keeps only weak
    references) and cancelled together at shutdown."""

    def __init__(self) -> None:
        self._running: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def cancel_all(self) -> None:
        for task in list(self._running):
            task.cancel()
