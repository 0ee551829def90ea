"""opsctl spec: validate and inspect stack specs."""

from __future__ import annotations

import typer

from opsctl.cli._group import OpsctlGroup
from opsctl.cli._options import RootOptions

app = typer.Typer(
    cls=OpsctlGroup, help="Validate and inspect stack specs (infra/Pulumi.<stack>.yaml)."
)


@app.command()
def validate(ctx: typer.Context) -> None:
    """Validate a stack spec. Exit 0 when valid, 2 with every problem listed when not."""
    from opsctl import console
    from opsctl.spec import stack_file

    root = RootOptions.of(ctx)
    names = [region.name for region in root.spec.regions]
    if root.json:
        file = stack_file(root.settings.infra_dir, root.stack)
        console.emit_json({"stack": root.stack, "file": str(file), "valid": True, "regions": names})
    else:
        console.info(f"[green]✓[/green] stack '{root.stack}' is valid ({', '.join(names)})")


@app.command()
def show(ctx: typer.Context) -> None:
    """Show the whole stack spec: a summary table, or every field with --output json."""
    from opsctl import console
    from opsctl.spec._view import render_spec

    root = RootOptions.of(ctx)
    if root.json:
        console.emit_json(root.spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    else:
        render_spec(console.data_console(), root.stack, root.spec)


@app.command()
def regions(ctx: typer.Context) -> None:
    """List the stack's regions with their role, context, zones and gateway capacity."""
    from opsctl import console
    from opsctl.spec._view import region_rows, render_regions

    root = RootOptions.of(ctx)
    if root.json:
        console.emit_json(region_rows(root.spec))
    else:
        render_regions(console.data_console(), root.spec)
