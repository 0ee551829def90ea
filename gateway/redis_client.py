"""The Redis client of the gateway and the dispatcher, for a single server (the local stack, a
RedisReplication's master Service) or a Redis Cluster (the sharded production regions).

Every multi-key command and script keeps its keys in one hash slot ({conversation} tags, see
gateway/state.py), so the same code runs on both. Pub/sub is sharded (SPUBLISH/SSUBSCRIBE, Redis
7.0+): a channel lives on the shard owning its slot, so deliveries cost one shard, not the
whole cluster bus as classic PUBLISH would, and publishes can be pipelined in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import Config

# After a Redis restart every pooled connection is stale once: reconnect and retry instead of
# failing that request (commands here are idempotent or deduplicated).
RETRIES = 2
# A quiet subscription asks Redis for a pong this often, and counts the connection dead without
# one this long after: a frozen or unreachable Redis keeps the TCP connection open, and a
# blocking read would wait for the kernel's keepalive (the gateway then missed deliveries for
# tens of seconds without knowing).
PUBSUB_PING_S = 5.0
PUBSUB_PONG_WITHIN_S = 5.0


@dataclass(frozen=True)
class RedisAuth:
    """Who the client is (an ACL user and its password) and which CA it trusts (rediss://).
    The password is read from its file once, at start, and never shown (repr)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @classmethod
    def of(cls, config: Config) -> RedisAuth:
        password = None
        if config.redis_password_file is not None:
            password = config.redis_password_file.read_text(encoding="utf-8").strip()
        return cls(
            username=config.redis_username or None,
            password=password,
            ca_file=str(config.redis_ca_file) if config.redis_ca_file else None,
        )

    def kwargs(self, url: str) -> dict[str, Any]:
        """Connection arguments: credentials, and for rediss:// a verified TLS connection."""
        out: dict[str, Any] = {}
        if self.username:
            out["username"] = self.username
        if self.password is not None:
            out["password"] = self.password
        if url.startswith("rediss://"):
            out["ssl_cert_reqs"] = "required"
            out["ssl_check_hostname"] = True
            if self.ca_file:
                out["ssl_ca_certs"] = self.ca_file
        return out


def connect_config(config: Config, *, max_connections: int, timeout_s: float) -> Any:
    """The client a process's config asks for (URL, cluster or not, credentials, CA)."""
    return connect(
        config.redis_url,
        cluster=config.redis_cluster,
        max_connections=max_connections,
        timeout_s=timeout_s,
        auth=RedisAuth.of(config),
    )


def connect(
    url: str,
    *,
    cluster: bool,
    max_connections: int,
    timeout_s: float,
    auth: RedisAuth | None = None,
) -> Any:
    """A client for ``url``; with ``cluster`` it discovers the cluster from that seed node."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES)
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": retry,
        **(auth or RedisAuth()).kwargs(url),
    }
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        # max_connections is per node here.
        return RedisCluster.from_url(url, max_connections=max_connections, **common)
    import redis.asyncio as aioredis

    # Blocking pool: a burst of requests waits for a connection instead of failing.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s, **common
    )
    return aioredis.Redis(connection_pool=pool)


def queue_script(pipe: Any, script: Any, keys: list[str], args: list[Any]) -> None:
    """Queue a Lua script on a pipeline. A cluster pipeline cannot load a script that a node
    lacks (NOSCRIPT fails the batch), so there the script's text is sent (EVAL, which Redis
    caches by hash); a single server's pipeline loads it once and sends the hash."""
    from redis.asyncio.cluster import ClusterPipeline

    if isinstance(pipe, ClusterPipeline):
        pipe.eval(script.script, len(keys), *keys, *args)
    else:
        pipe.scripts.add(script)
        pipe.evalsha(script.sha, len(keys), *keys, *args)


class Subscription:
    """Sharded subscriptions to some channels, handed to a callback as they arrive. On a cluster
    each channel gets its own connection to its shard and its own reader: one reader polling
    several shards in turn would hold a message on one shard while it waits on another."""

    def __init__(self, client: Any, channels: list[str]) -> None:
        self._client = client
        self._channels = channels
        self._cluster = _is_cluster(client)
        self._pubsubs: list[Any] = []

    async def open(self) -> Subscription:
        """Subscribe to every channel; raises if Redis is unreachable."""
        try:
            if self._cluster:
                await self._client.initialize()
                for channel in self._channels:
                    pubsub = self._client.pubsub()
                    self._pubsubs.append(pubsub)
                    await pubsub.ssubscribe(channel)
            else:
                pubsub = self._client.pubsub()
                self._pubsubs.append(pubsub)
                await pubsub.ssubscribe(*self._channels)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def run(
        self,
        on_message: Callable[[str, str], None],
        on_resubscribed: Callable[[], None] = lambda: None,
    ) -> None:
        """Call ``on_message(channel, data)`` for every message until a connection is lost,
        then raise that error. redis-py may also reconnect and subscribe again by itself
        (a dropped connection, a cluster slot move): what was published meanwhile is lost all
        the same, so ``on_resubscribed()`` is called when a confirmation beyond the first
        ones arrives."""
        if len(self._pubsubs) == 1:
            await self._read(self._pubsubs[0], on_message, on_resubscribed)
            return
        readers = [
            asyncio.create_task(self._read(p, on_message, on_resubscribed)) for p in self._pubsubs
        ]
        try:
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
            for reader in done:
                reader.result()
        finally:
            for reader in readers:
                reader.cancel()
            for reader in readers:
                with contextlib.suppress(BaseException):
                    await reader

    async def _read(
        self,
        pubsub: Any,
        on_message: Callable[[str, str], None],
        on_resubscribed: Callable[[], None],
    ) -> None:
        read = pubsub.get_sharded_message if self._cluster else pubsub.get_message
        expected = len(self._channels) if not self._cluster else 1  # first confirmations
        confirmed = 0
        heard = time.monotonic()
        pinged: float | None = None
        while True:
            message = await read(timeout=PUBSUB_PING_S)
            now = time.monotonic()
            if message is not None:
                heard, pinged = now, None
                kind = message.get("type")
                if kind == "smessage":
                    on_message(message["channel"], message["data"])
                elif kind == "ssubscribe":
                    confirmed += 1
                    extra = confirmed - expected
                    if extra > 0 and (extra - 1) % expected == 0:  # once per resubscription
                        on_resubscribed()
            if pinged is not None and now - pinged > PUBSUB_PONG_WITHIN_S:
                raise ConnectionError(f"no answer from Redis pub/sub in {now - heard:.0f} s")
            if pinged is None and now - heard >= PUBSUB_PING_S:
                # On a cluster each shard's connection is its own (node_pubsub_mapping).
                for connection in getattr(pubsub, "node_pubsub_mapping", {}).values() or [pubsub]:
                    await connection.ping()
                pinged = now

    async def aclose(self) -> None:
        for pubsub in self._pubsubs:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


def _is_cluster(client: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)
