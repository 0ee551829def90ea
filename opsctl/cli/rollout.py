"""opsctl rollout: region-by-region canary or rolling releases with automatic rollback."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opsctl.cli._options import OutputOption, StackOption, settings
from opsctl.settings import OutputFormat

if TYPE_CHECKING:
    from opsctl.rollout import KubeFactory, Outcome, RolloutRecord
    from opsctl.settings import Settings
    from opsctl.spec import StackSpec

app = typer.Typer(
    help="Roll a new gateway or dispatcher image out region by region, with canary analysis "
    "on Prometheus signals and automatic rollback. Exit 0 done, 1 rolled back, 2 bad input, "
    "3 paused or inconclusive."
)


class ComponentChoice(StrEnum):
    gateway = "gateway"
    dispatcher = "dispatcher"


class StrategyChoice(StrEnum):
    canary = "canary"
    rolling = "rolling"


ComponentOption = Annotated[
    ComponentChoice, typer.Option("--component", help="Which Deployment to roll.")
]
NamespaceOption = Annotated[
    str, typer.Option("--namespace", "-n", help="Namespace of the im-gateway release.")
]
KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="Kubeconfig holding every region's kubeContext [default: $KUBECONFIG].",
        show_default=False,
        dir_okay=False,
    ),
]
PrometheusOption = Annotated[
    list[str] | None,
    typer.Option(
        "--prometheus",
        help="Prometheus URL for every region, or REGION=URL for one (repeatable).",
        show_default=False,
    ),
]


def _kube(kubeconfig: Path | None) -> Any:
    from opsctl.rollout import rest_factory

    return rest_factory(kubeconfig)


def _spec(ctx: typer.Context, stack: str | None, output: OutputFormat | None) -> Any:
    from opsctl.spec import load_stack

    resolved = settings(ctx, stack=stack, output=output)
    return resolved, load_stack(resolved.infra_dir, resolved.stack)


def _event(region: str, message: str) -> None:
    from rich.markup import escape

    from opsctl import console

    console.info(f"[bold]{escape(region)}[/bold] {escape(message)}")


def _finish(outcome: Outcome, resolved: Settings) -> None:
    """Print the rollout, then turn its phase into the exit code."""
    from opsctl.errors import CheckFailed, ExitCode, Inconclusive

    _print(resolved, outcome.report)
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
    stack: StackOption = None,
    component: ComponentOption = ComponentChoice.gateway,
    regions: Annotated[
        str, typer.Option("--regions", help="Comma-separated region names, or 'all'.")
    ] = "all",
    strategy: Annotated[
        StrategyChoice, typer.Option("--strategy", help="canary (Deployment beside) or rolling.")
    ] = StrategyChoice.canary,
    steps: Annotated[
        str, typer.Option("--steps", help="Canary weights in percent, increasing; 100 promotes.")
    ] = "5,25,50,100",
    bake: Annotated[
        str, typer.Option("--bake", help="Time a promoted region is watched before the next.")
    ] = "10m",
    interval: Annotated[
        str, typer.Option("--interval", help="Analysis interval (and PromQL rate window).")
    ] = "1m",
    min_samples: Annotated[
        int, typer.Option("--min-samples", help="Fewer samples per signal is inconclusive.")
    ] = 50,
    failure_limit: Annotated[
        int, typer.Option("--failure-limit", help="Failed analyses tolerated before rollback.")
    ] = 0,
    drain_window: Annotated[
        str, typer.Option("--drain-window", help="The gateway's drain window (chart value).")
    ] = "30s",
    drain_threshold: Annotated[
        int | None,
        typer.Option(
            "--drain-threshold",
            help="Connections under which leaving pods count as drained [default: 1% of a pod].",
            show_default=False,
        ),
    ] = None,
    namespace: NamespaceOption = "im",
    release: Annotated[str, typer.Option("--release", help="Helm release name.")] = "im-gateway",
    prometheus: PrometheusOption = None,
    kubeconfig: KubeconfigOption = None,
    rollback_promoted: Annotated[
        bool,
        typer.Option(
            "--rollback-promoted", help="On failure also revert promoted regions, newest first."
        ),
    ] = False,
    ready_timeout: Annotated[
        str, typer.Option("--ready-timeout", help="How long new pods may take to be ready.")
    ] = "5m",
    max_consumer_lag: Annotated[
        float, typer.Option("--max-consumer-lag", help="Kafka consumer lag ceiling (records).")
    ] = 1000.0,
    baseline_tolerance: Annotated[
        float, typer.Option("--baseline-tolerance", help="How much worse than stable (0.2=20%).")
    ] = 0.2,
    output: OutputOption = None,
) -> None:
    """Start a rollout: waves of regions (primary first), each canaried, promoted and baked."""
    from opsctl import rollout

    resolved, spec = _spec(ctx, stack, output)
    request = rollout.StartRequest(
        stack=resolved.stack,
        image=image,
        component=component.value,
        regions=regions,
        strategy=strategy.value,
        steps=steps,
        bake=bake,
        interval=interval,
        min_samples=min_samples,
        failure_limit=failure_limit,
        drain_window=drain_window,
        drain_threshold=drain_threshold,
        namespace=namespace,
        release=release,
        prometheus=tuple(prometheus or ()),
        max_consumer_lag=max_consumer_lag,
        baseline_tolerance=baseline_tolerance,
        rollback_promoted=rollback_promoted,
        ready_timeout=ready_timeout,
    )
    _finish(rollout.start(spec, request, _kube(kubeconfig), on_event=_event), resolved)


def _located(
    ctx: typer.Context,
    *,
    stack: str | None,
    output: OutputFormat | None,
    component: ComponentChoice,
    namespace: str,
    kubeconfig: Path | None,
) -> tuple[Settings, StackSpec, Any, Any]:
    from opsctl import rollout

    resolved, spec = _spec(ctx, stack, output)
    kube = _kube(kubeconfig)
    record = rollout.locate(spec, component.value, namespace, kube, on_event=_event)
    return resolved, spec, kube, record


def _act_on_newest(
    ctx: typer.Context,
    act: Callable[[RolloutRecord, KubeFactory], Outcome],
    *,
    stack: str | None,
    output: OutputFormat | None,
    component: ComponentChoice,
    namespace: str,
    kubeconfig: Path | None,
) -> None:
    """Do `act` to the newest rollout, print the rollout as it leaves it, and say its phase."""
    from opsctl import console

    resolved, _, kube, record = _located(ctx, stack=stack, output=output, component=component,
                                          namespace=namespace, kubeconfig=kubeconfig)  # fmt: skip
    outcome = act(record, kube)
    _print(resolved, outcome.report)
    console.info(f"rollout {record.id}: {outcome.phase}")


@app.command()
def status(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    component: ComponentOption = ComponentChoice.gateway,
    namespace: NamespaceOption = "im",
    kubeconfig: KubeconfigOption = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch", "-w", help="Redraw until it ends or pauses; Ctrl-C stops it (exit 130)."
        ),
    ] = False,
    every: Annotated[
        float, typer.Option("--every", min=0.1, help="Seconds between redraws.")
    ] = 2.0,
    output: OutputOption = None,
) -> None:
    """Show the newest rollout per region. Exit 0 done/running, 1 rolled back, 3 paused."""
    from opsctl import console, rollout
    from opsctl.errors import CheckFailed, ExitCode, Inconclusive
    from opsctl.rollout._view import watch_status

    resolved, spec, kube, record = _located(ctx, stack=stack, output=output,
                                            component=component, namespace=namespace,
                                            kubeconfig=kubeconfig)  # fmt: skip

    def fetch() -> dict[str, Any]:
        fresh = rollout.locate(spec, component.value, namespace, kube)
        return rollout.status(fresh, kube)

    if watch and resolved.output is not OutputFormat.json:
        try:
            report = watch_status(console.data_console(), fetch, every)
        except KeyboardInterrupt:
            # Watching is read-only: say so, since Ctrl-C here must not look like an abort.
            console.info(f"stopped watching; rollout {record.id} is not affected")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    else:
        report = rollout.status(record, kube)
        _print(resolved, report)
    phase = report["phase"]
    if phase == "paused":
        raise Inconclusive(f"rollout {report['id']} is paused: {report['reason']}")
    if phase in ("rolled_back", "aborted"):
        raise CheckFailed(f"rollout {report['id']} {phase}: {report['reason']}")


@app.command()
def pause(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    component: ComponentOption = ComponentChoice.gateway,
    namespace: NamespaceOption = "im",
    kubeconfig: KubeconfigOption = None,
    output: OutputOption = None,
) -> None:
    """Ask the running rollout to stop after its current wait; `resume` continues it."""
    from opsctl import rollout

    _act_on_newest(ctx, rollout.pause, stack=stack, output=output, component=component,
                   namespace=namespace, kubeconfig=kubeconfig)  # fmt: skip


@app.command()
def resume(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    component: ComponentOption = ComponentChoice.gateway,
    namespace: NamespaceOption = "im",
    kubeconfig: KubeconfigOption = None,
    prometheus: PrometheusOption = None,
    output: OutputOption = None,
) -> None:
    """Continue a paused (or crashed) rollout from the step it stopped in, from any machine."""
    from opsctl import rollout

    resolved, _, kube, record = _located(ctx, stack=stack, output=output, component=component,
                                          namespace=namespace, kubeconfig=kubeconfig)  # fmt: skip
    outcome = rollout.resume(record, kube, prometheus=tuple(prometheus or ()), on_event=_event)
    _finish(outcome, resolved)


@app.command()
def abort(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    component: ComponentOption = ComponentChoice.gateway,
    namespace: NamespaceOption = "im",
    kubeconfig: KubeconfigOption = None,
    output: OutputOption = None,
) -> None:
    """Stop the rollout and roll the current region back (exit 0 once rolled back)."""
    from opsctl import rollout

    _act_on_newest(ctx, partial(rollout.abort, on_event=_event), stack=stack, output=output,
                   component=component, namespace=namespace, kubeconfig=kubeconfig)  # fmt: skip


@app.command()
def undo(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    component: ComponentOption = ComponentChoice.gateway,
    namespace: NamespaceOption = "im",
    kubeconfig: KubeconfigOption = None,
    output: OutputOption = None,
) -> None:
    """Revert every region the newest rollout touched to its previous template."""
    from opsctl import rollout

    _act_on_newest(ctx, partial(rollout.undo, on_event=_event), stack=stack, output=output,
                   component=component, namespace=namespace, kubeconfig=kubeconfig)  # fmt: skip


@app.command()
def history(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    component: ComponentOption = ComponentChoice.gateway,
    namespace: NamespaceOption = "im",
    kubeconfig: KubeconfigOption = None,
    output: OutputOption = None,
) -> None:
    """Earlier rollouts of the component, newest first, as recorded in the clusters."""
    from opsctl import console, rollout
    from opsctl.rollout._view import render_history

    resolved, spec = _spec(ctx, stack, output)
    entries = rollout.history(spec, component.value, namespace, _kube(kubeconfig))
    if resolved.output is OutputFormat.json:
        console.emit_json(entries)
    else:
        render_history(console.data_console(), entries)


def _print(resolved: Settings, report: dict[str, Any]) -> None:
    from opsctl import console
    from opsctl.rollout._view import render_status

    if resolved.output is OutputFormat.json:
        console.emit_json(report)
    else:
        render_status(console.data_console(), report)
