"""opsctl rollout: region-by-region canary or rolling releases with automatic rollback.

The group callback resolves the options every rollout command shares (component, namespace,
kubeconfig) into a :class:`RolloutTarget`. Every default of ``rollout start`` lives in
``opsctl.rollout.StartRequest``: a flag left out is not passed on, so the request's own
default applies, and help shows it from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opsctl.cli._group import OpsctlGroup, help_values
from opsctl.cli._options import (
    NamespaceOption,
    OnRoot,
    PrometheusUrlOption,
    RegionsKubeconfigOption,
    like,
)
from opsctl.errors import ExitCode

if TYPE_CHECKING:
    from opsctl.rollout import KubeFactory, Outcome, RolloutRecord

app = typer.Typer(
    cls=OpsctlGroup,
    help="Roll a new gateway or dispatcher image out region by region, with canary analysis "
    "on Prometheus signals and automatic rollback. Exit 0 done, 1 rolled back, 2 bad input, "
    "3 paused or inconclusive.",
)


@help_values("rollout")
def _defaults() -> dict[str, object]:
    """Help shows StartRequest's defaults and the domain's choices, not copies of them."""
    from dataclasses import MISSING, fields

    from opsctl.rollout._plan import COMPONENTS, STRATEGIES, StartRequest

    values: dict[str, object] = {f.name: f.default for f in fields(StartRequest)}
    values = {name: value for name, value in values.items() if value is not MISSING}
    return {**values, "components": ", ".join(COMPONENTS), "strategies": ", ".join(STRATEGIES)}


def _complete(constant: str) -> Callable[[str], list[str]]:
    def complete(incomplete: str) -> list[str]:
        from opsctl.rollout import _plan

        return [v for v in getattr(_plan, constant) if v.startswith(incomplete)]

    return complete


ComponentOption = Annotated[
    str | None,
    typer.Option(
        "--component",
        help="Which Deployment to roll: {rollout.components}. [default: {rollout.component}]",
        autocompletion=_complete("COMPONENTS"),
        show_default=False,
    ),
]
RolloutNamespaceOption = Annotated[
    str | None,
    like(
        NamespaceOption, help="Namespace of the im-gateway release. [default: {rollout.namespace}]"
    ),
]
RolloutPrometheusOption = Annotated[
    list[str] | None,
    like(
        PrometheusUrlOption,
        names=("--prometheus",),  # the old spelling, kept for existing scripts
        help="Prometheus of every region: a URL for all, or REGION=URL for one (repeatable).",
    ),
]


@dataclass(frozen=True)
class RolloutTarget(OnRoot):
    """Which rollout the commands act on: the stack, component and namespace, and how to
    reach each region's cluster."""

    component: str
    namespace: str
    kubeconfig: Path | None

    @cached_property
    def kube(self) -> KubeFactory:
        from opsctl.rollout import rest_factory

        return rest_factory(self.kubeconfig)

    def newest(self, *, quiet: bool = False) -> RolloutRecord:
        """The newest rollout of the component in any of the stack's regions."""
        from opsctl import rollout

        if quiet:
            return rollout.locate(self.spec, self.component, self.namespace, self.kube)
        return rollout.locate(self.spec, self.component, self.namespace, self.kube, on_event=_event)

    def show(self, report: dict[str, Any]) -> None:
        from opsctl import console
        from opsctl.rollout._view import render_status

        if self.json:
            console.emit_json(report)
        else:
            render_status(console.data_console(), report)


@app.callback()
def target(
    ctx: typer.Context,
    *,
    component: ComponentOption = None,
    namespace: RolloutNamespaceOption = None,
    kubeconfig: RegionsKubeconfigOption = None,
) -> None:
    """Every rollout command takes --component, --namespace and --kubeconfig (also after it)."""
    from opsctl.cli._options import RootOptions
    from opsctl.errors import UserInputError
    from opsctl.rollout import COMPONENTS, StartRequest

    if component is not None and component not in COMPONENTS:
        raise UserInputError(f"--component: '{component}' is not one of {', '.join(COMPONENTS)}")
    ctx.obj = RolloutTarget(
        root=RootOptions.of(ctx),
        component=component or StartRequest.component,
        namespace=namespace or StartRequest.namespace,
        kubeconfig=kubeconfig,
    )


def _event(region: str, message: str) -> None:
    from rich.markup import escape

    from opsctl import console

    console.info(f"[bold]{escape(region)}[/bold] {escape(message)}")


def _finish(rollout: RolloutTarget, outcome: Outcome) -> None:
    """Print the rollout, then turn its phase into the exit code."""
    from opsctl.errors import CheckFailed, ExitCode, Inconclusive

    rollout.show(outcome.report)
    code = outcome.exit_code
    if code is ExitCode.INCONCLUSIVE:
        raise Inconclusive(
            f"rollout {outcome.phase}: {outcome.reason}",
            hint="`opsctl rollout resume` continues it, `abort` rolls the region back",
        )
    if code is ExitCode.FAILED:
        raise CheckFailed(f"rollout {outcome.phase}: {outcome.reason}")


@app.command()
def start(
    ctx: typer.Context,
    *,
    image: Annotated[
        str, typer.Option("--image", help="New image: a full reference, or a tag for the spec's.")
    ],
    regions: Annotated[
        str | None,
        typer.Option(
            "--regions", help="Comma-separated region names, or 'all'. [default: {rollout.regions}]"
        ),
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            help="{rollout.strategies}: a canary Deployment beside, or the Deployment's own "
            "rolling update. [default: {rollout.strategy}]",
            autocompletion=_complete("STRATEGIES"),
        ),
    ] = None,
    steps: Annotated[
        str | None,
        typer.Option(
            "--steps",
            help="Canary weights in percent, increasing; 100 promotes. [default: {rollout.steps}]",
        ),
    ] = None,
    bake: Annotated[
        str | None,
        typer.Option(
            "--bake",
            help="Time a promoted region is watched before the next. [default: {rollout.bake}]",
        ),
    ] = None,
    interval: Annotated[
        str | None,
        typer.Option(
            "--interval",
            help="Analysis interval (and PromQL rate window). [default: {rollout.interval}]",
        ),
    ] = None,
    min_samples: Annotated[
        int | None,
        typer.Option(
            "--min-samples",
            help="Fewer samples per signal is inconclusive. [default: {rollout.min_samples}]",
        ),
    ] = None,
    failure_limit: Annotated[
        int | None,
        typer.Option(
            "--failure-limit",
            help="Failed analyses tolerated before rollback. [default: {rollout.failure_limit}]",
        ),
    ] = None,
    drain_window: Annotated[
        str | None,
        typer.Option(
            "--drain-window",
            help="How long a leaving gateway pod drains, for every region: overrides each "
            "region's drain window from the stack spec (the one the chart gets). "
            "[default: each region's from the spec]",
        ),
    ] = None,
    drain_threshold: Annotated[
        int | None,
        typer.Option(
            "--drain-threshold",
            help="Connections under which leaving pods count as drained. [default: 1% of the "
            "smallest region's connections per pod]",
        ),
    ] = None,
    release: Annotated[
        str | None,
        typer.Option("--release", help="Helm release name. [default: {rollout.release}]"),
    ] = None,
    prometheus_url: RolloutPrometheusOption = None,
    rollback_promoted: Annotated[
        bool | None,
        typer.Option(
            "--rollback-promoted", help="On failure also revert promoted regions, newest first."
        ),
    ] = None,
    ready_timeout: Annotated[
        str | None,
        typer.Option(
            "--ready-timeout",
            help="How long new pods may take to be ready. [default: {rollout.ready_timeout}]",
        ),
    ] = None,
    max_consumer_lag: Annotated[
        float | None,
        typer.Option(
            "--max-consumer-lag",
            help="Kafka consumer lag ceiling (records). [default: {rollout.max_consumer_lag}]",
        ),
    ] = None,
    baseline_tolerance: Annotated[
        float | None,
        typer.Option(
            "--baseline-tolerance",
            help="How much worse than stable the canary may be (0.2 = 20%). "
            "[default: {rollout.baseline_tolerance}]",
        ),
    ] = None,
) -> None:
    """Start a rollout: waves of regions (primary first), each canaried, promoted and baked."""
    from opsctl import rollout

    target = RolloutTarget.of(ctx)
    given: dict[str, Any] = {
        "regions": regions,
        "strategy": strategy,
        "steps": steps,
        "bake": bake,
        "interval": interval,
        "min_samples": min_samples,
        "failure_limit": failure_limit,
        "drain_window": drain_window,
        "drain_threshold": drain_threshold,
        "release": release,
        "prometheus": tuple(prometheus_url) if prometheus_url else None,
        "rollback_promoted": rollback_promoted,
        "ready_timeout": ready_timeout,
        "max_consumer_lag": max_consumer_lag,
        "baseline_tolerance": baseline_tolerance,
    }
    request = replace(
        rollout.StartRequest(
            stack=target.stack, image=image, component=target.component, namespace=target.namespace
        ),
        **{flag: value for flag, value in given.items() if value is not None},
    )
    _finish(target, rollout.start(target.spec, request, target.kube, on_event=_event))


def _act_on_newest(
    ctx: typer.Context, act: Callable[[RolloutRecord, KubeFactory], Outcome]
) -> None:
    """Do `act` to the newest rollout, print the rollout as it leaves it, and say its phase."""
    from opsctl import console

    target = RolloutTarget.of(ctx)
    record = target.newest()
    outcome = act(record, target.kube)
    target.show(outcome.report)
    console.info(f"rollout {record.id}: {outcome.phase}")


@app.command()
def status(
    ctx: typer.Context,
    *,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Redraw until it ends or pauses; Ctrl-C stops it "
            f"(exit {int(ExitCode.INTERRUPTED)}).",
        ),
    ] = False,
    every: Annotated[
        float, typer.Option("--every", min=0.1, help="Seconds between redraws.")
    ] = 2.0,
) -> None:
    """Show the newest rollout per region. Exit 0 done/running, 1 rolled back, 3 paused."""
    from opsctl import console, rollout
    from opsctl.errors import CheckFailed, ExitCode, Inconclusive
    from opsctl.rollout._view import watch_status

    target = RolloutTarget.of(ctx)
    record = target.newest()

    def fetch() -> dict[str, Any]:
        return rollout.status(target.newest(quiet=True), target.kube)

    if watch and not target.json:
        try:
            report = watch_status(console.data_console(), fetch, every)
        except KeyboardInterrupt:
            # Watching is read-only: say so, since Ctrl-C here must not look like an abort.
            console.info(f"stopped watching; rollout {record.id} is not affected")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    else:
        report = rollout.status(record, target.kube)
        target.show(report)
    phase = report["phase"]
    if phase == "paused":
        raise Inconclusive(f"rollout {report['id']} is paused: {report['reason']}")
    if phase in ("rolled_back", "aborted"):
        raise CheckFailed(f"rollout {report['id']} {phase}: {report['reason']}")


@app.command()
def pause(ctx: typer.Context) -> None:
    """Ask the running rollout to stop after its current wait; `resume` continues it."""
    from opsctl import rollout

    _act_on_newest(ctx, rollout.pause)


@app.command()
def resume(ctx: typer.Context, *, prometheus_url: RolloutPrometheusOption = None) -> None:
    """Continue a paused (or crashed) rollout from the step it stopped in, from any machine."""
    from opsctl import rollout

    target = RolloutTarget.of(ctx)
    record = target.newest()
    urls = tuple(prometheus_url or ())
    _finish(target, rollout.resume(record, target.kube, prometheus=urls, on_event=_event))


@app.command()
def abort(ctx: typer.Context) -> None:
    """Stop the rollout and roll the current region back (exit 0 once rolled back)."""
    from opsctl import rollout

    _act_on_newest(ctx, partial(rollout.abort, on_event=_event))


@app.command()
def undo(ctx: typer.Context) -> None:
    """Revert every region the newest rollout touched to its previous template."""
    from opsctl import rollout

    _act_on_newest(ctx, partial(rollout.undo, on_event=_event))


@app.command()
def history(ctx: typer.Context) -> None:
    """Earlier rollouts of the component, newest first, as recorded in the clusters."""
    from opsctl import console, rollout
    from opsctl.rollout._view import render_history

    target = RolloutTarget.of(ctx)
    entries = rollout.history(target.spec, target.component, target.namespace, target.kube)
    if target.json:
        console.emit_json(entries)
    else:
        render_history(console.data_console(), entries)
