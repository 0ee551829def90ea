"""Token bucket and drain pacing."""

from __future__ import annotations

import math
import random

import pytest

from gateway.limits import TokenBucket, drain_schedule

pytestmark = pytest.mark.unit


def test_bucket_allows_burst_then_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert all(bucket.take(0.0) for _ in range(5))
    assert not bucket.take(0.0)
    assert bucket.retry_after() == pytest.approx(0.1)
    assert bucket.take(0.1)  # one token back after 1/rate
    assert not bucket.take(0.1)
    assert sum(bucket.take(0.1 + i * 0.01) for i in range(1, 101)) == pytest.approx(10, abs=1)


def test_bucket_never_exceeds_burst_after_idle() -> None:
    bucket = TokenBucket(rate=100, burst=3, now=0.0)
    assert sum(bucket.take(1000.0) for _ in range(10)) == 3


def test_bucket_ignores_clock_going_backwards() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)


@pytest.mark.parametrize("count", [0, 1, 7, 1000, 30000])
def test_drain_schedule_is_paced_and_inside_the_window(count: int) -> None:
    window = 10.0
    offsets = drain_schedule(count, window, rng=random.Random(1))
    assert len(offsets) == count
    assert offsets == sorted(offsets)
    assert all(0 <= o < window * 0.8 for o in offsets)
    if count >= 1000:
        # Paced: any 100 ms tick holds at most its fair share plus one slot of jitter.
        per_tick = count / (window * 0.8) * 0.1
        ticks: dict[int, int] = {}
        for o in offsets:
            ticks[int(o / 0.1)] = ticks.get(int(o / 0.1), 0) + 1
        assert max(ticks.values()) <= math.ceil(per_tick) + 1


def test_drain_schedule_is_jittered() -> None:
    a = drain_schedule(50, 5.0, rng=random.Random(1))
    b = drain_schedule(50, 5.0, rng=random.Random(2))
    assert a != b
