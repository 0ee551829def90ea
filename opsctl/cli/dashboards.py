"""opsctl dashboards: build the Grafana dashboards, lint them live, ship them as ConfigMaps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opsctl.cli._group import OpsctlGroup
from opsctl.cli._options import (
    LocalStateDirOption,
    OutDirOption,
    PrometheusUrlOption,
    RootOptions,
    one_prometheus,
)
from opsctl.cli._output import ObjectsFor, apply_command, report_files, write_region_files

app = typer.Typer(
    cls=OpsctlGroup,
    help="Grafana dashboards as code: build, lint against a live Prometheus, apply.",
)


@app.command()
def build(
    ctx: typer.Context,
    *,
    out: OutDirOption = Path("build/dashboards"),
) -> None:
    """Write one JSON file per dashboard."""
    from opsctl import dashboards

    root = RootOptions.of(ctx)
    written = dashboards.write(dashboards.build_all(root.spec), out)
    report_files(root.settings, [str(path) for path in written])


@app.command()
def lint(
    ctx: typer.Context,
    *,
    live: Annotated[
        bool, typer.Option(help="Also run every query against a live Prometheus.")
    ] = True,
    prometheus_url: PrometheusUrlOption = None,
    state_dir: LocalStateDirOption = None,
) -> None:
    """Structure checks, then every PromQL expression must run and return series (exit 1)."""
    from opsctl import console, dashboards
    from opsctl.errors import CheckFailed

    root = RootOptions.of(ctx)
    built = dashboards.build_all(root.spec)
    problems = dashboards.structure_problems(built)
    checked = sum(1 for uid, doc in built.items() for _ in dashboards.expressions(uid, doc))
    if live and not problems:
        prometheus = one_prometheus(prometheus_url, state_dir)
        console.info(f"running {checked} queries against {prometheus}")
        problems = dashboards.live_problems(built, prometheus)
    if root.json:
        console.emit_json({"dashboards": sorted(built), "queries": checked, "problems": problems})
    if problems:
        raise CheckFailed(f"{len(problems)} dashboard problems:\n  " + "\n  ".join(problems))
    console.info(f"[green]✓[/green] {len(built)} dashboards, {checked} queries")


@app.command()
def render(
    ctx: typer.Context,
    *,
    out: OutDirOption = Path("build/dashboards/render"),
) -> None:
    """Write the dashboard ConfigMaps per region (the Grafana sidecar label set)."""
    from opsctl import dashboards

    root = RootOptions.of(ctx)
    spec = root.spec
    built = dashboards.build_all(spec)
    written = write_region_files(
        out,
        spec.regions,
        "dashboards.yaml",
        lambda region: dashboards.configmaps(spec, region, built),
    )
    report_files(root.settings, written)


@apply_command(app, kind="dashboard ConfigMaps")
def _configmaps(ctx: typer.Context) -> tuple[str, ObjectsFor]:
    """Server-side apply the dashboard ConfigMaps (Grafana sidecar label) to each region."""
    from opsctl import dashboards
    from opsctl.dashboards._configmaps import NAMESPACE

    spec = RootOptions.of(ctx).spec
    built = dashboards.build_all(spec)
    return NAMESPACE, lambda region: dashboards.configmaps(spec, region, built)
