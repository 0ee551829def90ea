"""The one Rich console: human messages go to stderr, data goes to stdout.

Rich is imported on first use, not at import time, so `opsctl --help` does not pay for it.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    # Messages, progress and errors. Data never goes here, so `opsctl ... | jq` stays clean.
    console: Console

verbosity = 0  # set once by the root callback: -1 quiet, 0 normal, 1+ verbose


@cache
def _stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def __getattr__(name: str) -> Any:
    if name == "console":
        return _stderr_console()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def data_console() -> Console:
    """A console on the current stdout, for data only (tables)."""
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def info(message: str) -> None:
    if verbosity >= 0:
        _stderr_console().print(message)


def debug(message: str) -> None:
    if verbosity >= 1:
        _stderr_console().print(f"[dim]{message}[/dim]")


def warn(message: str) -> None:
    _stderr_console().print(f"[yellow]warning:[/yellow] {message}")


def emit_json(data: Any) -> None:
    """Write machine-readable data to stdout, exactly one JSON document."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()
