"""Synchronised reconnect storms (a profile's ``storms:``): who drops, and what is counted.

The master sends one ``storm`` message to every worker at the storm's instant (a single
process triggers it itself); each worker drops the chosen share of its users at once and every
one of them reconnects with the protocol's jittered exponential backoff (``backoff_s``).

Counters per storm ``i`` (summed over workers by opsctl): ``storm<i>_dropped``,
``storm<i>_reconnected``, ``storm<i>_attempts`` (connects tried, including the failed ones)
and ``storm<i>_gave_up``. The time until the last user is back is Locust's ``STORM storm<i>``
entry (its max: Locust merges the workers' latencies exactly).
"""

from __future__ import annotations

from collections import Counter

_GOLDEN = 2654435761  # Knuth's multiplicative hash: spreads consecutive user numbers evenly


def in_storm(user_index: int, share_pct: float) -> bool:
    """Whether user ``user_index`` is among the ``share_pct`` percent that drop: the same
    users in every run, spread evenly over workers and gateways."""
    return (user_index * _GOLDEN) % 2**32 < share_pct / 100.0 * 2**32


class StormTracker:
    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters

    def dropped(self, storm: int, count: int) -> None:
        self.counters[f"storm{storm}_dropped"] += count

    def reconnected(self, storm: int, attempts: int, _seconds: float) -> None:
        self.counters[f"storm{storm}_reconnected"] += 1
        self.counters[f"storm{storm}_attempts"] += attempts

    def gave_up(self, storm: int, attempts: int) -> None:
        self.counters[f"storm{storm}_gave_up"] += 1
        self.counters[f"storm{storm}_attempts"] += attempts
