"""opsctl region: move a region's conversations to the other regions and back
(docs/multi-region.md 7.1-7.3), on a running local stack (`opsctl local up --stack staging`).

The group callback resolves the local stack to work on (``--state-dir``) into a
:class:`RegionTarget`; the commands are thin over ``opsctl.region``. Exit codes: 0 done,
1 a check failed (a dispatcher did not confirm a drain, a DC did not answer a reconciliation
read), 2 bad input (unknown region, the last region, a planned move of a region that is gone;
nothing changed), 3 interrupted (the JSON says what is left; re-run to continue).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._group import OpsctlGroup, help_values
from opsctl.cli._options import LocalStateDirOption, OnRoot, RootOptions, like

if TYPE_CHECKING:
    from opsctl.region import LocalRegions, Outcome, Progress, Request

app = typer.Typer(
    cls=OpsctlGroup,
    help="Evacuate a region (its conversations move to other homes, its gateways drain within "
    "the spec's reconnect budget) and restore it, on the local multi-region stack. Exit 0 done, "
    "1 check failed, 2 bad input (nothing changed), 3 interrupted (re-run to continue).",
    no_args_is_help=True,
)


@help_values("region")
def _defaults() -> dict[str, object]:
    from dataclasses import fields

    from opsctl.region import Request

    return {f.name: f.default for f in fields(Request) if f.name != "region"}


@dataclass(frozen=True)
class RegionTarget(OnRoot):
    """The local stack whose regions the commands move: the one recorded in ``state_dir``."""

    state_dir_flag: Path | None

    @cached_property
    def regions(self) -> LocalRegions:
        from opsctl.local import LocalStack, resolve_state_dir
        from opsctl.region import LocalRegions

        stack = LocalStack.recorded(resolve_state_dir(self.state_dir_flag))
        return LocalRegions.of(stack, self.stack)

    def request(self, region: str, **given: object) -> Request:
        """The request, with the spec's reconnect budget; flags left out keep their defaults."""
        from opsctl.errors import UserInputError
        from opsctl.region import Request

        names = [r.name for r in self.spec.regions]
        if region not in names:
            raise UserInputError(
                f"unknown region '{region}': stack '{self.stack}' has {', '.join(names)}",
                hint=f"opsctl spec regions --stack {self.stack}",
            )
        budget = float(self.spec.reconnect_budget.reconnects_per_second)
        chosen = {k: v for k, v in given.items() if v is not None}
        return Request(region=region, budget_per_s=budget, **chosen)  # type: ignore[arg-type]


@app.callback()
def target(
    ctx: typer.Context,
    *,
    state_dir: Annotated[
        Path | None,
        like(
            LocalStateDirOption,
            help="State dir of the running local stack. "
            "[env: {local.env_state_dir}] [default: {local.state_dir}]",
        ),
    ] = None,
) -> None:
    """Every region command takes --state-dir (also after it)."""
    ctx.obj = RegionTarget(RootOptions.of(ctx), state_dir)


# A positional REGION; the parameter is not called "region", which names --region/-r options.
RegionArgument = Annotated[
    str, typer.Argument(metavar="REGION", help="The region, as the stack spec names it.")
]
BatchOption = Annotated[
    int | None,
    typer.Option(
        "--batch",
        min=1,
        help="Shards per planned batch (drain, wait, move, reconcile). [default: {region.batch}]",
        show_default=False,
    ),
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=1,
        help="Seconds to wait for dispatchers to apply a map change. [default: {region.timeout_s}]",
        show_default=False,
    ),
]


@app.command()
def evacuate(
    ctx: typer.Context,
    name: RegionArgument,
    *,
    unreachable: Annotated[
        bool,
        typer.Option(
            "--unreachable",
            help="Unplanned failover: the region is gone; move its shards at once without a "
            "drain (held records wait for `restore`). docs/multi-region.md 7.2.",
        ),
    ] = False,
    batch: BatchOption = None,
    timeout: TimeoutOption = None,
) -> None:
    """Move every conversation homed in REGION to its next region, then drain REGION's
    gateways paced by the spec's reconnect budget. Re-running continues an interrupted run."""
    from opsctl import region as domain

    target_ = RegionTarget.of(ctx)
    request = target_.request(name, unreachable=unreachable, batch=batch, timeout_s=timeout)
    _finish(target_, domain.evacuate(target_.regions, request, _progress()))


@app.command()
def restore(
    ctx: typer.Context,
    name: RegionArgument,
    *,
    batch: BatchOption = None,
    timeout: TimeoutOption = None,
) -> None:
    """Start REGION's gateways, reconcile held records, then move REGION's conversations
    back home with planned moves. Re-running continues an interrupted run."""
    from opsctl import region as domain

    target_ = RegionTarget.of(ctx)
    request = target_.request(name, batch=batch, timeout_s=timeout)
    _finish(target_, domain.restore(target_.regions, request, _progress()))


def _progress() -> Progress:
    from opsctl import console
    from opsctl.region import NullProgress
    from opsctl.region._progress import RichProgress

    if console.verbosity < 0:
        return NullProgress()
    return RichProgress(console.console)


def _finish(target_: RegionTarget, outcome: Outcome) -> None:
    """Print the outcome (JSON or a summary), then exit 3 when it did not complete."""
    from opsctl import console
    from opsctl.errors import CheckFailed, Inconclusive

    if target_.json:
        console.emit_json(outcome.as_dict())
    else:
        _summary(outcome)
    for warning in outcome.warnings:
        console.warn(warning)
    if outcome.error is not None:
        left = ", ".join(f"{k} {v}" for k, v in outcome.left.items())
        raise CheckFailed(
            f"{outcome.operation} {outcome.region} stopped: {outcome.error}; left: {left}",
            hint=f"re-run `opsctl region {outcome.operation} {outcome.region}` to continue",
        )
    if not outcome.complete:
        left = ", ".join(f"{k} {v}" for k, v in outcome.left.items())
        raise Inconclusive(
            f"{outcome.operation} {outcome.region} interrupted; left: {left}",
            hint=f"re-run `opsctl region {outcome.operation} {outcome.region}` to continue",
        )


def _summary(outcome: Outcome) -> None:
    from rich.table import Table

    from opsctl import console

    table = Table(
        title=f"{outcome.operation} {outcome.region} ({outcome.mode})",
        title_justify="left",
        show_header=False,
    )
    table.add_column("what")
    table.add_column("value", overflow="fold")
    table.add_row("complete", "yes" if outcome.complete else "[red]no[/red]")
    table.add_row("shards moved", f"{outcome.shards_moved} of {outcome.shards_planned}")
    table.add_row("map epoch", f"{outcome.epoch_before} -> {outcome.epoch_after}")
    rec = outcome.reconciled
    table.add_row(
        "held records",
        f"{rec['held']} reconciled ({rec['sequenced']} sequenced, "
        f"{rec['already_sequenced']} already sequenced)",
    )
    for gateway in outcome.gateways:
        rate = f", {gateway.per_second}/s" if gateway.per_second is not None else ""
        sessions = "" if gateway.sessions is None else f"{gateway.sessions} sessions, "
        table.add_row(gateway.name, f"{gateway.action}: {sessions}{gateway.seconds} s{rate}")
    table.add_row("home share", ", ".join(f"{r} {v:.1%}" for r, v in outcome.home_share.items()))
    table.add_row("left", ", ".join(f"{k} {v}" for k, v in outcome.left.items()))
    if outcome.failover_s is not None:
        table.add_row("failover", f"{outcome.failover_s} s to the survivors' epoch")
    table.add_row("took", f"{outcome.duration_s} s")
    console.data_console().print(table)
