"""The one Rich console: human messages go to stderr, data goes to stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Messages, progress and errors. Data never goes here, so `opsctl ... | jq` stays clean.
console = Console(stderr=True, highlight=False)
# Data only (tables, JSON). Created lazily so tests that swap sys.stdout are honoured.
_data_console: Console | None = None

verbosity = 0  # set once by the root callback: -1 quiet, 0 normal, 1+ verbose


def data_console() -> Console:
    global _data_console
    if _data_console is None or _data_console.file is not sys.stdout:
        _data_console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    return _data_console


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
