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
    from opsctl import console, dashboards
    from opsctl.spec import load_stack

    resolved = settings(ctx, stack=stack, output=output)
    written = dashboards.write(
        dashboards.build_all(load_stack(resolved.infra_dir, resolved.stack)), out
    )
    if resolved.output is OutputFormat.json:
        console.emit_json({"stack": resolved.stack, "files": [str(p) for p in written]})
    else:
        for path in written:
            console.data_console().print(str(path))


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
    import yaml

    from opsctl import console, dashboards
    from opsctl.spec import load_stack

    resolved = settings(ctx, stack=stack, output=output)
    spec = load_stack(resolved.infra_dir, resolved.stack)
    built = dashboards.build_all(spec)
    written = []
    for region in spec.regions:
        path = out / region.name / "dashboards.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        objects = dashboards.configmaps(spec, region, built)
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False, width=1000))
        written.append(str(path))
    if resolved.output is OutputFormat.json:
        console.emit_json({"stack": resolved.stack, "files": written})
    else:
        for shown in written:
            console.data_console().print(shown)


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
    from opsctl import console, dashboards
    from opsctl.dashboards._configmaps import NAMESPACE
    from opsctl.kube import apply_to_regions, default_kubeconfig, select_regions
    from opsctl.spec import Region, load_stack

    resolved = settings(ctx, stack=stack, output=output)
    spec = load_stack(resolved.infra_dir, resolved.stack)
    regions = select_regions(spec, region)
    built = dashboards.build_all(spec)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}

    def objects_for(target: Region) -> list[dict[str, object]]:
        return [namespace, *dashboards.configmaps(spec, target, built)]

    applied = apply_to_regions(
        regions, objects_for, kubeconfig=kubeconfig or default_kubeconfig(), dry_run=dry_run
    )
    if resolved.output is OutputFormat.json:
        console.emit_json({name: [str(o) for o in objs] for name, objs in applied.items()})
    verb = "validated" if dry_run else "applied"
    for name, objects in applied.items():
        skipped = [o for o in objects if not o.validated]
        if skipped:
            console.warn(f"{name}: {len(skipped)} objects not validated: their namespace "
                         "does not exist yet (a real apply creates it first)")  # fmt: skip
        console.info(f"[green]✓[/green] {name}: {verb} {len(objects) - 1} dashboard ConfigMaps")
