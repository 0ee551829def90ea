"""opsctl demo: the README's main job."""

from __future__ import annotations

import typer

from opsctl.cli._options import settings


def demo(ctx: typer.Context) -> None:
    """Validate every shipped stack and show prod, the environment everything is sized for."""
    from opsctl import console
    from opsctl.spec import list_stacks, load_stack
    from opsctl.spec._view import render_spec

    resolved = settings(ctx)
    stacks = list_stacks(resolved.infra_dir)
    for name in stacks:
        spec = load_stack(resolved.infra_dir, name)
        console.info(f"[green]✓[/green] stack '{name}' is valid ({len(spec.regions)} regions)")
    render_spec(console.data_console(), "prod", load_stack(resolved.infra_dir, "prod"))
