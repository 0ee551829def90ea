"""The one Rich console: human messages go to stderr, data goes to stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Messages, progress and errors. Data never goes here, so `opsctl ... | jq` stays clean.
console = Console(stderr=True, highlight=False, soft_wrap=True)
verbosity = 0  # set once by the root callback: -1 quiet, 0 normal, 1+ verbose


def data_console() -> Console:
    """A console on the current stdout, for data only (tables)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def info(message: str) -> None:
    if verbosity >= 0:
        console.print(message)


def debug(message: str) -> None:
    if verbosity >= 1:
        console.print(f"[dim]{message}[/dim]")


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")


def emit_json(data: Any) -> None:
    """Write machine-readable data to stdout, exactly one JSON document."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()
