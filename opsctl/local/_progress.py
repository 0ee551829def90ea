"""Rich progress for up/down: one line per component with its outcome and time."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text


class _ElapsedWhileRunning(TimeElapsedColumn):
    """A ticking clock while a component starts; finished lines carry their own time."""

    def render(self, task: Task) -> Text:
        return Text("") if task.finished else super().render(task)


class RichReporter:
    """Renders LocalStack progress on the (stderr) console."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(finished_text=""),
            TextColumn("{task.description}"),
            _ElapsedWhileRunning(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._started = False

    def begin(self, name: str, action: str) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        text = f"  {escape(name):<13} {escape(action)}"
        self._tasks[name] = self._progress.add_task(text, total=1)

    def done(self, name: str, ok: bool, summary: str) -> None:
        if name not in self._tasks:
            self.begin(name, "")
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        self._progress.update(
            self._tasks[name],
            description=f"{mark} {escape(name):<13} {escape(summary)}",
            completed=1,
        )

    def close(self) -> None:
        if self._started:
            self._progress.stop()
            self._started = False
            self._tasks.clear()
