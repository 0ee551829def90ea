"""opsctl drill: rehearse failures on the local stack (issue 15): `list` the drills, `run` one
under load and gate on its verdict (lost, duplicated, reordered, time to recover, alerts)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._group import OpsctlGroup, help_values
from opsctl.cli._options import LocalStateDirOption, OnRoot, RootOptions, like

if TYPE_CHECKING:
    from opsctl.drill import Verdict

app = typer.Typer(
    cls=OpsctlGroup,
    help="Chaos drills on the local stack: `list` them, `run` one under load (a fault, its "
    "restore, then a verdict on every acknowledged message and the alerts that fired). "
    "docs/drills.md maps each onto Kubernetes faults.",
    no_args_is_help=True,
)


@help_values("drill")
def _defaults() -> dict[str, object]:
    from opsctl.drill import DEFAULT_DURATION_S, DEFAULT_REPORTS_DIR
    from opsctl.drill._run import LOAD_USERS

    return {
        "duration": f"{DEFAULT_DURATION_S:g}",
        "reports": DEFAULT_REPORTS_DIR,
        "users": LOAD_USERS,
    }


@dataclass(frozen=True)
class DrillTarget(OnRoot):
    """The local stack the drills run on."""

    state_dir: Path | None

    def check_local(self, running: str | None = None) -> None:
        """Drills run on a local stack: --stack local, or (a region drill) the spec the local
        stack in --state-dir runs (``running``, e.g. staging)."""
        from opsctl.errors import UserInputError

        if self.stack not in ("local", running):
            raise UserInputError(
                f"stack '{self.stack}': drills run on the local stack only",
                hint="use --stack local (region-down: or the spec the local stack runs); "
                "docs/drills.md maps each drill onto a cluster",
            )


@app.callback()
def target(
    ctx: typer.Context,
    *,
    state_dir: Annotated[
        Path | None,
        like(
            LocalStateDirOption,
            help="State dir of the local stack to drill. "
            "[env: {local.env_state_dir}] [default: {local.state_dir}]",
        ),
    ] = None,
) -> None:
    """Every drill command takes --state-dir (also after it)."""
    ctx.obj = DrillTarget(RootOptions.of(ctx), state_dir)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every drill: its fault, the alerts it expects to fire, and whether the local stack can
    produce it (if not, why). Exit 0."""
    from opsctl import console
    from opsctl.cli._output import print_table
    from opsctl.drill import DRILLS

    target = DrillTarget.of(ctx)
    if target.json:
        console.emit_json({"drills": [d.listing() for d in DRILLS]})
        return
    print_table(
        "drills (opsctl drill run NAME)",
        ("name", "local", "fault", "expected alerts"),
        (
            [
                d.name,
                ("yes (multi-region stack)" if d.multi_region else "yes")
                if d.available
                else f"no: {d.unavailable}",
                d.fault if d.available else d.summary,
                ", ".join(a.describe() for a in d.expected_alerts) or "-",
            ]
            for d in DRILLS
        ),
    )


@app.command()
def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The drill (`opsctl drill list`).")],
    *,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            metavar="SECONDS",
            help="Hold the fault at least this long; longer when the drill's expected alerts "
            "need it (their `for:`). [default: {drill.duration}]",
            show_default=False,
        ),
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report-dir",
            help="Write the report (drill.json) and the load's files here. "
            "[default: {drill.reports}/<time>-<drill>-<id>]",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    users: Annotated[
        int | None,
        typer.Option(
            "--users",
            min=1,
            help="Locust users of the background load. [default: {drill.users}]",
            show_default=False,
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            "--region",
            "-r",
            help="region-down: the region to take down. [default: the stack's last region]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run one drill under load: Locust users and a probe whose every message is tracked; the
    fault is injected, held, restored; the stack must recover. Verdict: acked, delivered,
    lost, duplicated, reordered, time to recover, the alerts Alertmanager received. Exit 0
    pass, 1 a gate failed, 2 bad input (unknown drill, one the local stack cannot produce, the
    stack not up), 3 inconclusive (too little load, an expected alert already firing)."""
    from opsctl import console
    from opsctl.drill import DEFAULT_DURATION_S, Status, find, open_stack, run_drill
    from opsctl.drill._run import LOAD_USERS
    from opsctl.errors import CheckFailed, Inconclusive, UserInputError

    target = DrillTarget.of(ctx)
    drill = find(name)
    if not drill.multi_region:
        target.check_local()
    if not drill.available:
        raise UserInputError(
            f"drill '{drill.name}' cannot run on the local stack: {drill.unavailable}"
        )
    if region is not None and not drill.multi_region:
        raise UserInputError(f"--region: drill '{drill.name}' runs on the one-region stack")
    duration = DEFAULT_DURATION_S if duration is None else duration
    if duration <= 0:
        raise UserInputError(f"--duration {duration:g}: must be more than 0 seconds")
    stack = open_stack(target.state_dir, multi_region=drill.multi_region)
    if drill.multi_region:
        target.check_local(stack.config.spec_stack)
    console.info(f"drill {drill.name}: {drill.summary}")
    outcome = run_drill(
        drill,
        stack,
        duration_s=duration,
        report_dir=report_dir,
        load_users=users or LOAD_USERS,
        progress=lambda message: console.info(f"  {message}"),
        region=region,
    )
    verdict = outcome.verdict
    if target.json:
        console.emit_json({**verdict.as_dict(), "report": str(outcome.report)})
    else:
        _show(verdict)
    console.info(f"report: {outcome.report}")
    failed = [c.name for c in verdict.checks if c.ok is False]
    undecided = [c.name for c in verdict.checks if c.ok is None]
    if verdict.status is Status.FAIL:
        raise CheckFailed(f"drill {drill.name} failed: {', '.join(failed)}")
    if verdict.status is Status.INCONCLUSIVE:
        raise Inconclusive(f"drill {drill.name} is inconclusive: {', '.join(undecided)}")


def _shown(value: object) -> str:
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return "-" if value is None else str(value)


def _show(verdict: Verdict) -> None:
    from opsctl.cli._output import print_table

    figures = verdict.accounting
    load = figures.load
    recover = "-" if verdict.recover_s is None else f"{verdict.recover_s:.1f} s"
    fired = [a for a in verdict.alerts if not a.before_fault]
    print_table(
        f"drill {verdict.drill}: {verdict.status.value.upper()}",
        ("figure", "value"),
        [
            ["acked (probe)", str(figures.acked)],
            ["delivered to every device", str(figures.delivered)],
            ["lost", str(figures.lost)],
            ["duplicated", f"{figures.total_duplicated} (load: {load.get('duplicated', 0)})"],
            ["reordered", f"{figures.total_reordered} (load: {load.get('out_of_order', 0)})"],
            ["never acked", str(figures.unacked)],
            ["load: sends acked", str(load.get("sent_acked", 0))],
            ["time to recover", recover],
            *([k.replace("_", " "), _shown(v)] for k, v in verdict.figures.items()),
            [
                "alerts fired",
                ", ".join(
                    a.name
                    + (
                        "{"
                        + ",".join(
                            f"{k}={v}" for k, v in a.labels.items() if k in ("node", "instance")
                        )
                        + "}"
                        if a.labels
                        else ""
                    )
                    for a in fired
                )
                or "-",
            ],
        ],
    )
    print_table(
        "gates",
        ("check", "result", "detail"),
        (
            [c.name, {True: "ok", False: "FAILED", None: "undecided"}[c.ok], c.detail]
            for c in verdict.checks
        ),
    )
