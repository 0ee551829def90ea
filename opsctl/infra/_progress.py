"""Progress of an engine operation on stderr: one line per resource that changes (or fails).

On a terminal, Rich adds colour and a live status line (resources in flight, done so far);
piped, the same lines come out plain, one per resource, with no control characters.
Unchanged resources are counted, and listed only with ``-v``.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from opsctl.infra._events import Step

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status

_STYLE = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "delete": ("-", "red"),
    "replace": ("+-", "magenta"),
    "create-replacement": ("++", "magenta"),
    "delete-replaced": ("--", "magenta"),
    "refresh": ("~", "cyan"),
    "read": (">", "blue"),
}


class ConsoleReporter:
    def __init__(self, console: Console, title: str, *, verbose: bool = False) -> None:
        self.console = console
        self.title = title
        self.verbose = verbose
        self.terminal = console.is_terminal
        self.in_flight: dict[str, float] = {}
        self.reported: set[str] = set()
        self.done = 0
        self.unchanged = 0
        self._status: Status | None = None

    def __enter__(self) -> ConsoleReporter:
        if self.terminal:
            self._status = self.console.status(self.title)
            self._status.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._status is not None:
            self._status.stop()

    def _refresh(self) -> None:
        if self._status is not None:
            self._status.update(
                f"{self.title}: {self.done} done, {len(self.in_flight)} in progress"
            )

    def started(self, step: Step) -> None:
        self.in_flight.setdefault(step.urn, time.monotonic())
        self._refresh()

    def finished(self, step: Step) -> None:
        began = self.in_flight.pop(step.urn, None)
        if step.urn in self.reported and not step.failed:
            return  # a component registers its outputs a second time
        self.reported.add(step.urn)
        self.done += 1
        if not step.changes and not step.failed and not (step.op == "refresh" and step.diffs):
            self.unchanged += 1
            if not self.verbose:
                self._refresh()
                return
        from rich.markup import escape

        symbol, colour = _STYLE.get(step.op, ("=", "dim"))
        took = f" ({time.monotonic() - began:.1f}s)" if began is not None else ""
        if step.failed:
            symbol, colour = "x", "bold red"
        diffs = f" [{', '.join(step.diffs)}]" if step.diffs else ""
        failed = " FAILED" if step.failed else ""
        self.console.print(
            f"[{colour}]{symbol} {step.op:<8}[/{colour}] {escape(step.region):<12} "
            + escape(f"{step.type} {step.name}{diffs}{failed}{took}"),
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        self._refresh()

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)
