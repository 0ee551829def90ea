"""opsctl cluster: simulated Kubernetes clusters (kwok) standing in for the stack's regions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._options import OutputOption, StackOption, settings
from opsctl.settings import OutputFormat

if TYPE_CHECKING:
    from opsctl.cluster import ClusterPlan
    from opsctl.cluster.kwok import ClusterStatus, KwokClusters
    from opsctl.settings import Settings

app = typer.Typer(
    help="Simulated Kubernetes clusters (kwok on real control-plane binaries), one per region."
)

RegionsOption = Annotated[
    int | None,
    typer.Option(
        "--regions",
        help="How many regions: 1 = the local stack's, 2 = staging's, 3 = prod's region names.",
        show_default=False,
    ),
]


def _clusters() -> KwokClusters:
    from opsctl.cluster.kwok import KwokClusters

    return KwokClusters()


def _plans(ctx: typer.Context, stack: str | None, regions: int | None) -> list[ClusterPlan]:
    from opsctl.cluster import plan_clusters, resolve_stack

    resolved = settings(ctx, stack=stack)
    from_flag = stack is not None or resolved.sources.get("stack") == "cli"
    stack_name = resolve_stack(resolved.stack, regions, stack_from_flag=from_flag)
    return plan_clusters(resolved.infra_dir, stack_name)


def _render(statuses: list[ClusterStatus], resolved: Settings, kubeconfig: str) -> None:
    from rich.table import Table

    from opsctl import console

    if resolved.output is OutputFormat.json:
        console.emit_json(
            {"kubeconfig": kubeconfig, "clusters": [status.to_json() for status in statuses]}
        )
        return
    table = Table(box=None, pad_edge=False)
    for column in ("CONTEXT", "STACK", "REGION", "API SERVER", "NODES", "HEALTH"):
        table.add_column(column)
    for status in statuses:
        nodes = "-" if status.nodes is None else f"{status.ready_nodes}/{status.nodes} ready"
        health = "[green]healthy[/green]" if status.healthy else f"[red]{status.problem}[/red]"
        table.add_row(
            status.context, status.stack, status.region, status.apiserver or "-", nodes, health
        )
    console.data_console().print(table)


@app.command()
def up(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    regions: RegionsOption = None,
    nodes_per_zone: Annotated[
        int, typer.Option("--nodes-per-zone", help="Fake nodes in every zone of a region.")
    ] = 3,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds allowed per cluster before failing.")
    ] = 180.0,
    output: OutputOption = None,
) -> None:
    """Start one simulated cluster per region; contexts are the spec's kubeContext values."""
    import time

    from opsctl import console
    from opsctl.errors import UserInputError

    if nodes_per_zone < 1:
        raise UserInputError(f"--nodes-per-zone must be at least 1, got {nodes_per_zone}")
    if timeout <= 0:
        raise UserInputError(f"--timeout must be positive, got {timeout}")
    resolved = settings(ctx, stack=stack, output=output)
    plans = _plans(ctx, stack, regions)
    clusters = _clusters()
    started = time.monotonic()
    with console.console.status("starting clusters") as spinner:

        def step(message: str) -> None:
            spinner.update(message)
            console.debug(f"{time.monotonic() - started:6.1f}s {message}")

        statuses = clusters.up(plans, nodes_per_zone=nodes_per_zone, timeout=timeout, on_step=step)
    elapsed = time.monotonic() - started
    contexts = ", ".join(plan.context for plan in plans)
    console.info(f"[green]✓[/green] {len(plans)} cluster(s) up in {elapsed:.1f} s: {contexts}")
    console.info(f"  export KUBECONFIG={clusters.kubeconfig_path}")
    _render(statuses, resolved, str(clusters.kubeconfig_path))


@app.command()
def down(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    regions: RegionsOption = None,
    output: OutputOption = None,
) -> None:
    """Delete simulated clusters (all of them unless --stack/--regions narrows it down)."""
    from opsctl import console

    resolved = settings(ctx, stack=stack, output=output)
    clusters = _clusters()
    names = None
    if stack is not None or regions is not None:
        names = [plan.name for plan in _plans(ctx, stack, regions)]
    with console.console.status("stopping clusters"):
        removed = clusters.down(names)
    if resolved.output is OutputFormat.json:
        console.emit_json({"deleted": removed, "kubeconfig": str(clusters.kubeconfig_path)})
    elif removed:
        console.info(f"[green]✓[/green] deleted {', '.join(removed)}; no process left behind")
    else:
        console.info("no simulated clusters to delete")


@app.command()
def status(ctx: typer.Context, *, output: OutputOption = None) -> None:
    """List the simulated clusters with context, API server, nodes and health.

    Exits 1 when any cluster is unhealthy, so scripts can gate on it.
    """
    from opsctl import console
    from opsctl.errors import CheckFailed

    resolved = settings(ctx, output=output)
    clusters = _clusters()
    statuses = clusters.status()
    _render(statuses, resolved, str(clusters.kubeconfig_path))
    if not statuses and resolved.output is OutputFormat.table:
        console.info("no simulated clusters; start them with `opsctl cluster up`")
    unhealthy = [status.context for status in statuses if not status.healthy]
    if unhealthy:
        raise CheckFailed(f"unhealthy: {', '.join(unhealthy)}")
