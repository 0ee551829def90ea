"""One way to wait: poll a probe until it answers, or give up naming what we waited for.

Every "loop until ready or time out" in opsctl, its pytest plugins and its tests goes through
``wait_until``, so timeouts read the same everywhere and are measured on the monotonic clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL_S = 0.25


class WaitTimeout(TimeoutError):
    """A probe never answered truthily before its deadline."""

    def __init__(self, what: str, timeout: float, last: object) -> None:
        super().__init__(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        self.what = what
        self.timeout = timeout
        self.last = last


def wait_until(
    what: str,
    probe: Callable[[], T],
    *,
    timeout: float,
    interval: float = DEFAULT_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``probe()`` until it returns something truthy, and return that.

    Raises ``WaitTimeout`` (a ``TimeoutError``) naming ``what`` and the last answer once
    ``timeout`` seconds have passed. The probe runs at least once, even with a zero timeout.
    """
    deadline = clock() + timeout
    while True:
        last = probe()
        if last:
            return last
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitTimeout(what, timeout, last)
        sleep(min(interval, remaining))
