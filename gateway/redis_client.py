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
from collections.abc import AsyncIterator
from typing import Any

# After a Redis restart every pooled connection is stale once: reconnect and retry instead of
# failing that request (commands here are idempotent or deduplicated).
RETRIES = 2


def connect(url: str, *, cluster: bool, max_connections: int, timeout_s: float) -> Any:
    """A client for ``url``; with ``cluster`` it discovers the cluster from that seed node."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES)
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": retry,
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
    """Sharded subscriptions to some channels. On a cluster each channel gets its own
    connection to its shard, read by its own task: one reader polling several shards in turn
    would hold a message on one shard while it waits on another."""

    def __init__(self, client: Any, channels: list[str]) -> None:
        self._client = client
        self._channels = channels
        self._cluster = _is_cluster(client)
        self._pubsubs: list[Any] = []
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._readers: list[asyncio.Task[None]] = []

    async def open(self) -> Subscription:
        """Subscribe to every channel; raises if Redis is unreachable."""
        try:
            if self._cluster:
                await self._client.initialize()
                for channel in self._channels:
                    pubsub = self._client.pubsub()
                    self._pubsubs.append(pubsub)
                    await pubsub.ssubscribe(channel)
                self._readers = [asyncio.create_task(self._read(p)) for p in self._pubsubs]
            else:
                pubsub = self._client.pubsub()
                self._pubsubs.append(pubsub)
                await pubsub.ssubscribe(*self._channels)
                self._readers = [asyncio.create_task(self._read(pubsub))]
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _read(self, pubsub: Any) -> None:
        while True:
            if self._cluster:
                message = await pubsub.get_sharded_message(timeout=None)
            else:
                message = await pubsub.get_message(timeout=None)
            if message is not None and message.get("type") == "smessage":
                self._queue.put_nowait((message["channel"], message["data"]))

    async def messages(self) -> AsyncIterator[tuple[str, str]]:
        """(channel, data) in arrival order per channel; raises when a connection is lost."""
        while True:
            while not self._queue.empty():
                yield self._queue.get_nowait()
            getter = asyncio.ensure_future(self._queue.get())
            try:
                done, _ = await asyncio.wait(
                    [getter, *self._readers], return_when=asyncio.FIRST_COMPLETED
                )
            except BaseException:
                getter.cancel()
                raise
            if getter in done:
                yield getter.result()
                continue
            getter.cancel()
            for reader in done:
                reader.result()  # the reader's error: connection lost
            raise ConnectionError("a pub/sub reader stopped")

    async def aclose(self) -> None:
        for reader in self._readers:
            reader.cancel()
        for reader in self._readers:
            with contextlib.suppress(BaseException):
                await reader
        for pubsub in self._pubsubs:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


def _is_cluster(client: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)
