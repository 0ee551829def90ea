"""Small pure helpers for the gateway's limits: the per-connection token bucket and drain pacing."""

from __future__ import annotations

import random


class TokenBucket:
    """Classic token bucket; a few slots so it costs almost nothing per connection."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available again."""
        return max(0.0, (cost - self.tokens) / self.rate)


def drain_schedule(
    count: int, window_s: float, *, spread: float = 0.8, rng: random.Random | None = None
) -> list[float]:
    """When (seconds after SIGTERM) to tell each of ``count`` connections to reconnect elsewhere.

    Evenly paced over ``spread * window_s`` (leaving the rest of the window to close and flush),
    with each connection jittered inside its own slot, so the reconnect rate never spikes and
    the order is not predictable. Returns offsets sorted ascending.
    """
    if count <= 0:
        return []
    rng = rng or random.Random()
    span = window_s * spread
    slot = span / count
    return [(i + rng.random()) * slot for i in range(count)]
