"""The gateway's memoised Kafka partitioner must place every key exactly where aiokafka's
default partitioner does: per-conversation order relies on one partition per conversation,
whichever gateway (or version of it) produced the message."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from gateway.backends import CachedPartitioner

pytestmark = pytest.mark.unit


def test_cached_partitioner_matches_the_default_for_every_key() -> None:
    default, cached = DefaultPartitioner(), CachedPartitioner(size=50)
    partitions = list(range(6))
    keys = [f"dm:user-{i}:user-{i + 1}".encode() for i in range(200)] + [b"", b"g:team"]
    for _ in range(2):  # the second pass is served from the cache (and overflows it)
        for key in keys:
            assert cached(key, partitions, partitions) == default(key, partitions, partitions)
    # A partition count change is honoured (only the hash is cached, not the partition).
    assert cached(keys[0], [0, 1, 2], [0, 1, 2]) == default(keys[0], [0, 1, 2], [0, 1, 2])


def test_keyless_records_go_to_an_available_partition() -> None:
    assert CachedPartitioner()(None, [0, 1, 2], [2]) == 2
