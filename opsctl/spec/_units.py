"""Kubernetes quantities and Prometheus durations, as they appear in the stack spec."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

_QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)$"
)
# Binary suffixes are powers of 1024, decimal ones powers of 1000 (as Kubernetes reads them).
_MULTIPLIERS = {
    **{suffix: 1024**power for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)},
    **{suffix: 1000**power for power, suffix in enumerate(("k", "M", "G", "T", "P", "E"), 1)},
}

_DURATION = re.compile(r"^(?P<number>[0-9]+)(?P<unit>ms|s|m|h|d|w|y)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_storage(value: str) -> int:
    """'100Gi' -> bytes. Raises ValueError with a user-facing message."""
    return _positive(
        value,
        "size",
        _QUANTITY,
        "a size with a unit, e.g. 100Gi or 2Ti",
        lambda match: int(float(match["number"]) * _MULTIPLIERS[match["suffix"]]),
    )


def parse_duration(value: str) -> float:
    """'15d' -> seconds. Raises ValueError with a user-facing message."""
    return _positive(
        value,
        "duration",
        _DURATION,
        "a duration like 30s, 15m, 12h or 15d",
        lambda match: int(match["number"]) * _SECONDS[match["unit"]],
    )


N = TypeVar("N", int, float)


def _positive(
    value: str, what: str, pattern: re.Pattern[str], like: str, amount: Callable[[re.Match[str]], N]
) -> N:
    """A number with a unit, which must be above zero; ``like`` says what the text should be."""
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"'{value}' is negative; a {what} must be positive")
    match = pattern.match(text)
    if match is None:
        raise ValueError(f"'{value}' is not {like}")
    number = amount(match)
    if number <= 0:
        raise ValueError(f"'{value}' is zero; a {what} must be positive")
    return number
