"""Tables for people: one row per region, and the rollout history."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opsctl.rollout._state import TERMINAL_PHASES, UNKNOWN_REGION, Phase

if TYPE_CHECKING:
    from rich.console import Console, Group

_PHASE_STYLE: dict[str, str] = {
    Phase.DONE: "green",
    Phase.SUCCEEDED: "green",
    Phase.UNDONE: "cyan",
    Phase.PAUSED: "yellow",
    Phase.ROLLED_BACK: "red",
    Phase.ABORTED: "red",
}
# Watching stops here: the rollout is over, or waits for a person.
_ENDED = TERMINAL_PHASES | {Phase.PAUSED}


def _styled(phase: str) -> str:
    style = _PHASE_STYLE.get(phase)
    return f"[{style}]{phase}[/{style}]" if style else phase


def status_view(report: dict[str, Any]) -> Group:
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    head = Text.from_markup(
        f"rollout [bold]{escape(report['id'])}[/bold]  {report['component']} -> "
        f"{escape(report['image'])}  {report['strategy']} {report['steps']}  "
        f"phase {_styled(report['phase'])}"
    )
    table = Table(box=None, pad_edge=False)
    for column in ("REGION", "PHASE", "STEP", "WEIGHT", "CANARY", "STABLE", "FAILS", "ANALYSIS"):
        table.add_column(column)
    for region in report["regions"]:
        if "error" in region:
            table.add_row(region["region"], "[red]unreachable[/red]", *[""] * 5, region["error"])
            continue
        if region.get("phase") == UNKNOWN_REGION:
            table.add_row(region["region"], "-", *[""] * 6)
            continue
        last = region.get("lastAnalysis") or {}
        verdict = last.get("verdict", "-")
        detail = "; ".join(
            f"{s['name']} {s['reason']}" for s in last.get("signals", []) if s["verdict"] != "pass"
        )
        table.add_row(
            region["region"],
            _styled(region["phase"]),
            str(region["step"]),
            f"{region['weight']}%",
            str(region["canaryReplicas"]),
            str(region["stableReplicas"]),
            str(region["failures"]),
            escape(f"{verdict} {detail}".strip()),
        )
    parts: list[Any] = [head, table]
    if report.get("reason"):
        parts.append(Text(f"reason: {report['reason']}"))
    return Group(*parts)


def render_status(console: Console, report: dict[str, Any]) -> None:
    console.print(status_view(report))


def watch_status(
    console: Console, fetch: Callable[[], dict[str, Any]], every: float
) -> dict[str, Any]:
    """Redraw the table until the rollout ends (or pauses); returns the last report.

    On a terminal the table is redrawn in place. Piped or redirected, each refresh is printed
    after the previous one under a timestamp line, so a log shows every refresh.
    """
    from rich.live import Live

    report = fetch()
    if not console.is_terminal:
        refresh = 1
        while True:
            console.print(f"-- refresh {refresh} at {time.strftime('%H:%M:%S')}")
            console.print(status_view(report))
            console.file.flush()
            if report["phase"] in _ENDED:
                return report
            time.sleep(every)
            report = fetch()
            refresh += 1
    with Live(status_view(report), console=console, refresh_per_second=4) as live:
        while report["phase"] not in _ENDED:
            time.sleep(every)
            report = fetch()
            live.update(status_view(report))
    return report


def render_history(console: Console, entries: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("ID", "PHASE", "IMAGE", "STRATEGY", "REGIONS", "STARTED", "REASON"):
        table.add_column(column)
    for entry in entries:
        table.add_row(
            entry["id"],
            _styled(str(entry.get("phase"))),
            escape(str(entry.get("image"))),
            str(entry.get("strategy")),
            ",".join(str(name) for name in entry.get("regions") or []),
            str(entry.get("startedAt", ""))[:19],
            escape(str(entry.get("reason") or "")),
        )
    console.print(table)
