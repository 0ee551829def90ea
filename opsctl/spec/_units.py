"""Kubernetes quantities and Prometheus durations, as they appear in the stack spec."""

from __future__ import annotations

import re

_QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)$"
)
_MULTIPLIERS = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip

_DURATION = re.compile(r"^(?P<number>[0-9]+)(?P<unit>ms|s|m|h|d|w|y)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_storage(value: str) -> int:
    """'100Gi' -> bytes. Raises ValueError with a user-facing message."""
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"'{value}' is negative; a size must be positive")
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"'{value}' is not a size with a unit, e.g. 100Gi or 2Ti")
    size = int(float(match["number"]) * _MULTIPLIERS[match["suffix"]])
    if size <= 0:
        raise ValueError(f"'{value}' is zero; a size must be positive")
    return size


def parse_duration(value: str) -> float:
    """'15d' -> seconds. Raises ValueError with a user-facing message."""
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"'{value}' is negative; a duration must be positive")
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"'{value}' is not a duration like 30s, 15m, 12h or 15d")
    seconds = int(match["number"]) * _SECONDS[match["unit"]]
    if seconds <= 0:
        raise ValueError(f"'{value}' is zero; a duration must be positive")
    return seconds
