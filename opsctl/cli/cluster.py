"""opsctl cluster: simulated Kubernetes clusters (kwok) standing in for the stack's regions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._group import OpsctlGroup, help_values
from opsctl.cli._options import RootOptions

if TYPE_CHECKING:
    from opsctl.cluster import ClusterPlan
    from opsctl.cluster.kwok import ClusterStatus, KwokClusters

app = typer.Typer(
    cls=OpsctlGroup,
    help="Simulated Kubernetes clusters (kwok on real control-plane binaries), one per region.",
)


@help_values("cluster")
def _constants() -> dict[str, object]:
    from opsctl.cluster._plan import STACK_FOR_REGION_COUNT

    counts = sorted(STACK_FOR_REGION_COUNT.items())
    return {"regions": ", ".join(f"{count} = {stack}'s" for count, stack in counts)}


RegionsOption = Annotated[
    int | None,
    typer.Option(
        "--regions",
        help="How many regions, named as a stack's with that many: {cluster.regions}.",
        show_default=False,
    ),
]


def _clusters() -> KwokClusters:
    from opsctl.cluster.kwok import KwokClusters

    return KwokClusters()


def _stack_given(root: RootOptions) -> bool:
    return root.settings.sources.get("stack") == "cli"


def _plans(root: RootOptions, regions: int | None) -> list[ClusterPlan]:
    from opsctl.cluster import plan_clusters, resolve_stack

    stack_name = resolve_stack(root.stack, regions, stack_from_flag=_stack_given(root))
    return plan_clusters(root.settings.infra_dir, stack_name)


def _render(statuses: list[ClusterStatus], root: RootOptions, kubeconfig: str) -> None:
    from rich.table import Table

    from opsctl import console

    if root.json:
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
    regions: RegionsOption = None,
    nodes_per_zone: Annotated[
        int, typer.Option("--nodes-per-zone", help="Fake nodes in every zone of a region.")
    ] = 3,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds allowed per cluster before failing.")
    ] = 180.0,
) -> None:
    """Start one simulated cluster per region; contexts are the spec's kubeContext values."""
    import time

    from opsctl import console
    from opsctl.errors import UserInputError

    if nodes_per_zone < 1:
        raise UserInputError(f"--nodes-per-zone must be at least 1, got {nodes_per_zone}")
    if timeout <= 0:
        raise UserInputError(f"--timeout must be positive, got {timeout}")
    root = RootOptions.of(ctx)
    plans = _plans(root, regions)
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
    _render(statuses, root, str(clusters.kubeconfig_path))


@app.command()
def down(ctx: typer.Context, *, regions: RegionsOption = None) -> None:
    """Delete simulated clusters (all of them unless --stack/--regions narrows it down)."""
    from opsctl import console

    root = RootOptions.of(ctx)
    clusters = _clusters()
    names = None
    if _stack_given(root) or regions is not None:
        names = [plan.name for plan in _plans(root, regions)]
    with console.console.status("stopping clusters"):
        removed = clusters.down(names)
    if root.json:
        console.emit_json({"deleted": removed, "kubeconfig": str(clusters.kubeconfig_path)})
    elif removed:
        console.info(f"[green]✓[/green] deleted {', '.join(removed)}; no process left behind")
    else:
        console.info("no simulated clusters to delete")


@app.command()
def status(ctx: typer.Context) -> None:
    """List the simulated clusters with context, API server, nodes and health.

    Exits 1 when any cluster is unhealthy, so scripts can gate on it.
    """
    from opsctl import console
    from opsctl.errors import CheckFailed

    root = RootOptions.of(ctx)
    clusters = _clusters()
    statuses = clusters.status()
    _render(statuses, root, str(clusters.kubeconfig_path))
    if not statuses and not root.json:
        console.info("no simulated clusters; start them with `opsctl cluster up`")
    unhealthy = [status.context for status in statuses if not status.healthy]
    if unhealthy:
        raise CheckFailed(f"unhealthy: {', '.join(unhealthy)}")
