"""Clock-offset correction: put every worker on the gateway's clock (NTP-style, with pong).

A worker sends ``ping`` at local time t0, gets ``pong.server_time`` S, receives it at t1. With a
symmetric path, the server read its clock at (t0 + t1) / 2, so offset = S - (t0 + t1) / 2. The
sample with the smallest round trip bounds the error best (error <= rtt / 2), so it wins.
"""

from __future__ import annotations

import time


class ClockSync:
    def __init__(self, skew_ms: float = 0.0, correct: bool = True) -> None:
        self.skew_ms = skew_ms  # injected error of this worker's clock (tests, demos)
        self.correct = correct
        self.offset_ms = 0.0
        self.best_rtt_ms: float | None = None
        self.samples = 0

    def local_ms(self) -> float:
        """This worker's (possibly wrong) wall clock."""
        return time.time() * 1000.0 + self.skew_ms

    def add_sample(self, sent_local_ms: float, server_ms: float, received_local_ms: float) -> None:
        rtt = received_local_ms - sent_local_ms
        if rtt < 0:
            return
        self.samples += 1
        if self.best_rtt_ms is None or rtt <= self.best_rtt_ms:
            self.best_rtt_ms = rtt
            self.offset_ms = server_ms - (sent_local_ms + received_local_ms) / 2.0

    def now_ms(self) -> float:
        """The gateway's clock as best this worker knows it."""
        return self.local_ms() + (self.offset_ms if self.correct else 0.0)
