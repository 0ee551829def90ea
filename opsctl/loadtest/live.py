"""Live terminal progress for a run (Rich), and the final verdict table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opsctl.loadtest.runner import Progress
from opsctl.loadtest.verdict import Status, Verdict

if TYPE_CHECKING:
    from rich.console import Console


def _status_line(row: dict[str, Any]) -> str:
    p99 = row.get("p99_ms")
    cpu, lag = row.get("worker_cpu_max"), row.get("worker_lag_max_ms")
    workers = (
        f"workers {row['workers_connected']}/{row['workers_expected']}  "
        if "workers_expected" in row
        else ""
    )
    return workers + (
        f"users {row.get('users', 0)}  msg/s {row.get('msgs_per_s', 0)}"
        f"  p99 {'-' if p99 is None else f'{p99:g} ms'}  failures {row.get('failures', 0)}"
        f"  lost {row.get('lost', 0)}  gen cpu {cpu if cpu is not None else '-'}%"
        f" lag {lag if lag is not None else '-'} ms"
    )


@contextmanager
def live_progress(console: Console, enabled: bool, label: str) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=None, status="starting Locust...")

        def update(row: dict[str, Any], run_time: float) -> None:
            bar.update(task, total=run_time, completed=float(row.get("t", 0)))
            bar.update(task, status=_status_line(row))

        yield update


def verdict_table(console: Console, verdict: Verdict, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, caption=f"judged against {verdict.slo_source}")
    for column in ("check", "threshold", "measured", "status"):
        table.add_column(column)
    style = {Status.passed: "green", Status.failed: "red", Status.unreliable: "yellow"}
    for check in verdict.checks:
        table.add_row(
            check.name,
            check.threshold,
            check.measured,
            f"[{style[check.status]}]{check.status.value}[/]",
        )
    console.print(table)


def regions_table(console: Console, delivery_regions: dict[str, Any]) -> None:
    """Delivery latency of cross-region deliveries apart from same-region ones."""
    from rich.table import Table

    table = Table(title="delivery by region (sender's vs receiver's)")
    for column in ("deliveries", "count", "p50", "p95", "p99", "max"):
        table.add_column(column)
    for locality in ("cross", "same"):
        figures = delivery_regions.get(locality, {})

        def ms(key: str, figures: dict[str, Any] = figures) -> str:
            value = figures.get(key)
            return "-" if value is None else f"{value:g} ms"

        table.add_row(
            f"{locality}-region",
            str(figures.get("count", 0)),
            ms("p50_ms"),
            ms("p95_ms"),
            ms("p99_ms"),
            ms("max_ms"),
        )
    console.print(table)
