"""wait_until: returns the first truthy answer, and times out naming what it waited for."""

from __future__ import annotations

import pytest

from opsctl.poll import WaitTimeout, wait_until

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_returns_the_first_truthy_answer() -> None:
    answers = iter([None, 0, "", "ready", "later"])
    clock = FakeClock()
    got = wait_until("x", lambda: next(answers), timeout=10, clock=clock, sleep=clock.sleep)
    assert got == "ready"
    assert clock.slept == [0.25, 0.25, 0.25]


def test_times_out_naming_what_and_the_last_answer() -> None:
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as raised:
        wait_until(
            "the broker", lambda: [], timeout=1, interval=0.4, clock=clock, sleep=clock.sleep
        )
    assert "the broker" in str(raised.value)
    assert "last: []" in str(raised.value)
    assert isinstance(raised.value, TimeoutError)
    # It never sleeps past the deadline: 0.4 + 0.4 + 0.2.
    assert clock.slept == pytest.approx([0.4, 0.4, 0.2])


def test_probes_once_even_with_no_time() -> None:
    calls = []
    clock = FakeClock()
    assert wait_until("x", lambda: calls.append(1) or "y", timeout=0, clock=clock) == "y"
    assert calls == [1]
