"""opsctl dashboards: build the Grafana dashboards, lint them live, ship them as ConfigMaps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opsctl.cli._options import (
    DryRunOption,
    KubeconfigOption,
    LocalStateDirOption,
    OutputOption,
    PrometheusOption,
    RegionOption,
    StackOption,
    settings,
)
from opsctl.cli._output import apply_in_namespace, report_files, write_region_files
from opsctl.settings import OutputFormat

app = typer.Typer(help="Grafana dashboards as code: build, lint against a live Prometheus, apply.")

OutDirOption = Annotated[
    Path, typer.Option("--out", help="Directory to write into (created if missing).")
]


@app.command()
def build(
    ctx: typer.Context,
    *,
    out: OutDirOption = Path("build/dashboards"),
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Write one JSON file per dashboard."""
    from opsctl import dashboards
    from opsctl.spec import load_stack

    resolved = settings(ctx, stack=stack, output=output)
    written = dashboards.write(
        dashboards.build_all(load_stack(resolved.infra_dir, resolved.stack)), out
    )
    report_files(resolved, [str(path) for path in written])


@app.command()
def lint(
    ctx: typer.Context,
    *,
    live: Annotated[
        bool, typer.Option(help="Also run every query against a live Prometheus.")
    ] = True,
    prometheus_url: PrometheusOption = None,
    state_dir: LocalStateDirOption = None,
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Structure checks, then every PromQL expression must run and return series (exit 1)."""
    from opsctl import console, dashboards, endpoints
    from opsctl.errors import CheckFailed
    from opsctl.spec import load_stack

    resolved = settings(ctx, stack=stack, output=output)
    built = dashboards.build_all(load_stack(resolved.infra_dir, resolved.stack))
    problems = dashboards.structure_problems(built)
    checked = sum(1 for uid, doc in built.items() for _ in dashboards.expressions(uid, doc))
    if live and not problems:
        prometheus = endpoints.prometheus(prometheus_url, state_dir)
        console.info(f"running {checked} queries against {prometheus}")
        problems = dashboards.live_problems(built, prometheus)
    if resolved.output is OutputFormat.json:
        console.emit_json({"dashboards": sorted(built), "queries": checked, "problems": problems})
    if problems:
        raise CheckFailed(f"{len(problems)} dashboard problems:\n  " + "\n  ".join(problems))
    console.info(f"[green]✓[/green] {len(built)} dashboards, {checked} queries")


@app.command()
def render(
    ctx: typer.Context,
    *,
    out: OutDirOption = Path("build/dashboards/render"),
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Write the dashboard ConfigMaps per region (the Grafana sidecar label set)."""
    from opsctl import dashboards
    from opsctl.spec import load_stack

    resolved = settings(ctx, stack=stack, output=output)
    spec = load_stack(resolved.infra_dir, resolved.stack)
    built = dashboards.build_all(spec)
    written = write_region_files(
        out,
        spec.regions,
        "dashboards.yaml",
        lambda region: dashboards.configmaps(spec, region, built),
    )
    report_files(resolved, written)


@app.command()
def apply(
    ctx: typer.Context,
    *,
    region: RegionOption = None,
    kubeconfig: KubeconfigOption = None,
    dry_run: DryRunOption = False,
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Server-side apply the dashboard ConfigMaps (Grafana sidecar label) to each region."""
    from opsctl import dashboards
    from opsctl.dashboards._configmaps import NAMESPACE
    from opsctl.kube import select_regions
    from opsctl.spec import load_stack

    resolved = settings(ctx, stack=stack, output=output)
    spec = load_stack(resolved.infra_dir, resolved.stack)
    regions = select_regions(spec, region)
    built = dashboards.build_all(spec)
    apply_in_namespace(
        resolved,
        regions,
        NAMESPACE,
        lambda target: dashboards.configmaps(spec, target, built),
        kubeconfig=kubeconfig,
        dry_run=dry_run,
        kind="dashboard ConfigMaps",
    )
