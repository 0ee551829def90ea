"""Rich progress for a region operation on the (stderr) console: a line per step and a bar of
shards moved on a terminal; plain lines otherwise (logs, CI, a parent process reading them)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class RichProgress:
    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def step(self, text: str) -> None:
        self._console.print(f"[bold]→[/bold] {escape(text)}")

    def note(self, text: str) -> None:
        self._console.print(f"  {escape(text)}")

    def shards(self, done: int, total: int) -> None:
        if not self._console.is_terminal:
            return
        if self._bar is None:
            self._bar = Progress(
                TextColumn("  shards moved"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("shards", total=total)
        assert self._task is not None
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
