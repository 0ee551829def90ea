"""Kubernetes quantities and Prometheus durations, as they appear in the stack spec."""

from __future__ import annotations

import re

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
