"""gateway/dedup.py: claims and durable marks of one event-loop turn share one pipeline."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from gateway.dedup import DedupWriter
from tests.gateway import fakes

pytestmark = pytest.mark.unit


def writer(redis: fakes.FakeRedis) -> DedupWriter:
    return DedupWriter(fakes.config(), SimpleNamespace(redis=redis))  # type: ignore[arg-type]


def test_claims_of_one_loop_turn_go_out_in_one_pipeline() -> None:
    async def scenario() -> None:
        redis = fakes.FakeRedis()
        redis.strings["done"] = "p|c|1"
        dedup = writer(redis)
        first, again = dedup.claim("k", "p|c|2"), dedup.claim("k", "p|c|3")
        dedup.mark_durable("done", "a|c|1")
        assert await asyncio.gather(first, again) == [None, "p|c|2"]
        assert redis.pipelines == [["set", "set", "set"]]
        assert redis.strings == {"k": "p|c|2", "done": "a|c|1"}
        dedup.mark_durable("missing", "a|c|9")  # expired meanwhile: not written again
        await asyncio.sleep(0.01)
        assert "missing" not in redis.strings
        assert len(redis.pipelines) == 2

    asyncio.run(scenario())


def test_a_failed_pipeline_fails_its_claims() -> None:
    async def scenario() -> None:
        redis = fakes.FakeRedis()
        redis.fail = True
        with pytest.raises(ConnectionError):
            await writer(redis).claim("k", "p|c|1")

    asyncio.run(scenario())
