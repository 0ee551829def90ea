"""In-memory stand-ins for the gateway's unit tests: a WebSocket connection that records what
was written, a Redis client with the few commands the tested code uses, and a config."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from websockets.protocol import State

from gateway.config import Config, load
from gateway.limits import TokenBucket
from gateway.metrics import GatewayMetrics
from gateway.runtime import Tasks
from gateway.session import Outbox, Session


def config(**overrides: str) -> Config:
    env = {
        "IMGW_NODE_ID": "gw-1",
        "IMGW_LISTEN_PORT": "18080",
        "IMGW_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
        "IMGW_REDIS_URL": "redis://127.0.0.1:6379/0",
        "IMGW_CASSANDRA_HOSTS": "127.0.0.1:9042",
        **{f"IMGW_{k.upper()}": v for k, v in overrides.items()},
    }
    return load("dispatcher", env)  # the gateway role would also want a JWT key file


class FakeWebSocket:
    """What Outbox and the handlers touch of a websockets ServerConnection."""

    def __init__(self) -> None:
        self.written: list[str] = []  # frames, in the order they reached the socket
        self.buffered = 0  # bytes the transport reports as not yet sent
        self.closed: tuple[int, str] | None = None
        self.protocol = SimpleNamespace(state=State.OPEN, send_text=self._send_text)
        self.transport = SimpleNamespace(get_write_buffer_size=lambda: self.buffered)

    def _send_text(self, data: bytes) -> None:
        self.written.append(data.decode())

    def send_data(self) -> None:
        pass

    async def send(self, frame: str) -> None:
        self.written.append(frame)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.protocol.state = State.CLOSED

    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(frame) for frame in self.written]

    def ops(self) -> list[str]:
        return [frame["op"] for frame in self.frames()]


def session(user: str, device: str = "d1", *, ws: FakeWebSocket | None = None) -> Session:
    return Session(
        ws or FakeWebSocket(),  # type: ignore[arg-type]
        user,
        device,
        expires_at=2e9,
        bucket=TokenBucket(50, 100, 0.0),
        last_rx=0.0,
    )


def outbox(cfg: Config | None = None, metrics: GatewayMetrics | None = None) -> Outbox:
    return Outbox(cfg or config(), metrics or GatewayMetrics(), Tasks())


def ws_of(s: Session) -> FakeWebSocket:
    assert isinstance(s.ws, FakeWebSocket)
    return s.ws


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self._redis = redis
        self._queued: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **kwargs: Any) -> None:
            self._queued.append((name, args, kwargs))

        return queue

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        self._redis.pipelines.append([name for name, _, _ in self._queued])
        if self._redis.fail:
            raise ConnectionError("redis is down")
        return [getattr(self._redis, n)(*a, **k) for n, a, k in self._queued]


class FakeRedis:
    """Strings, hashes, sets and lists, synchronous inside pipelines, awaitable outside."""

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        self.sets: dict[str, set[str]] = {}
        self.lists: dict[str, list[str]] = {}
        self.pipelines: list[list[str]] = []  # the commands of each executed pipeline
        self.fail = False

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        return FakePipeline(self)

    def set(
        self,
        key: str,
        value: str,
        *,
        nx: bool = False,
        xx: bool = False,
        get: bool = False,
        **_: Any,
    ) -> str | bool | None:
        old = self.strings.get(key)
        if (nx and old is not None) or (xx and old is None):
            return old if get else None
        self.strings[key] = value
        return old if get else True

    def hget(self, key: str, field: str) -> str | None:
        return self.hashes.get(key, {}).get(field)

    def hgetall(self, key: str) -> dict[str, str]:
        return dict(self.hashes.get(key, {}))

    async def smembers(self, key: str) -> set[str]:
        return set(self.sets.get(key, set()))

    async def sadd(self, key: str, *members: str) -> int:
        self.sets.setdefault(key, set()).update(members)
        return len(members)

    async def lrange(self, key: str, start: int, end: int) -> list[str]:
        return list(self.lists.get(key, []))
