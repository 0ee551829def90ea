"""Generator honesty: sample this worker's CPU and gevent hub lag once a second.

A saturated generator delays its own reads, so the latency it reports is the generator's, not
the gateway's. The verdict marks such runs unreliable instead of passing them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gevent
import psutil

_TICK_S = 0.05


@dataclass
class HealthSampler:
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # t, cpu %, lag ms
    _greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        process = psutil.Process()
        process.cpu_percent(None)
        window_start = time.monotonic()
        worst_lag = 0.0
        while True:
            before = time.monotonic()
            gevent.sleep(_TICK_S)
            # How much later than asked the hub woke us: greenlets hogging the loop.
            worst_lag = max(worst_lag, (time.monotonic() - before - _TICK_S) * 1000.0)
            if time.monotonic() - window_start >= 1.0:
                cpu = process.cpu_percent(None)
                self.samples.append((round(time.time(), 3), round(cpu, 1), round(worst_lag, 1)))
                window_start = time.monotonic()
                worst_lag = 0.0
