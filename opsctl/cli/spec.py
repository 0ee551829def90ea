"""opsctl spec: validate and inspect stack specs."""

from __future__ import annotations

import typer

from opsctl.cli._options import OutputOption, StackOption, settings
from opsctl.settings import OutputFormat

app = typer.Typer(help="Validate and inspect stack specs (infra/Pulumi.<stack>.yaml).")


@app.command()
def validate(ctx: typer.Context, *, stack: StackOption = None, output: OutputOption = None) -> None:
    """Validate a stack spec. Exit 0 when valid, 2 with every problem listed when not."""
    from opsctl import console
    from opsctl.spec import load_stack, stack_file

    resolved = settings(ctx, stack=stack, output=output)
    spec = load_stack(resolved.infra_dir, resolved.stack)
    if resolved.output is OutputFormat.json:
        console.emit_json(
            {
                "stack": resolved.stack,
                "file": str(stack_file(resolved.infra_dir, resolved.stack)),
                "valid": True,
                "regions": [region.name for region in spec.regions],
            }
        )
    else:
        names = ", ".join(region.name for region in spec.regions)
        console.info(f"[green]✓[/green] stack '{resolved.stack}' is valid ({names})")


@app.command()
def show(ctx: typer.Context, *, stack: StackOption = None, output: OutputOption = None) -> None:
    """Show the whole stack spec: a summary table, or every field with --output json."""
    from opsctl import console
    from opsctl.spec import load_stack
    from opsctl.spec._view import render_spec

    resolved = settings(ctx, stack=stack, output=output)
    spec = load_stack(resolved.infra_dir, resolved.stack)
    if resolved.output is OutputFormat.json:
        console.emit_json(spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    else:
        render_spec(console.data_console(), resolved.stack, spec)


@app.command()
def regions(ctx: typer.Context, *, stack: StackOption = None, output: OutputOption = None) -> None:
    """List the stack's regions with their role, context, zones and gateway capacity."""
    from opsctl import console
    from opsctl.spec import load_stack
    from opsctl.spec._view import region_rows, render_regions

    resolved = settings(ctx, stack=stack, output=output)
    spec = load_stack(resolved.infra_dir, resolved.stack)
    if resolved.output is OutputFormat.json:
        console.emit_json(region_rows(spec))
    else:
        render_regions(console.data_console(), spec)
