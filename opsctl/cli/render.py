"""opsctl render: write a stack's Kubernetes objects and Helm releases to a directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opsctl.cli._options import OutputOption, RegionOption, RootOptions, StackOption, like


def render(
    ctx: typer.Context,
    *,
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Directory to write; each region's folder is replaced.", file_okay=False
        ),
    ],
    region: Annotated[
        list[str] | None, like(RegionOption, help="Only this region (repeatable). [default: all]")
    ] = None,
    # Its own --stack and --output (the global ones, by name) keep `render` whole when it is
    # mounted on its own, as the render cluster test does.
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Render every object, Helm release and our chart per region, without a cluster or Pulumi.

    Reviewers and CI diff the output; `kubectl apply -f` works on objects.yaml and chart-*.yaml.
    """
    from opsctl import console
    from opsctl.errors import UserInputError
    from opsctl.spec import stack_file
    from opsctl.stack import build_stack
    from opsctl.stack.render import render as write

    root = RootOptions.of(ctx).overridden(stack=stack, output=output and output.value)
    resolved = root.settings
    spec = root.spec
    known = [r.name for r in spec.regions]
    unknown = [name for name in region or [] if name not in known]
    if unknown:
        raise UserInputError(
            f"--region {', '.join(unknown)}: not in stack '{resolved.stack}'",
            hint=f"regions: {', '.join(known)}",
        )
    file = str(stack_file(resolved.infra_dir, resolved.stack))
    plan = build_stack(spec, regions=region or None, file=file)
    done = write(plan, out)
    regions = [
        {
            "name": r.region.name,
            "objects": len(r.objects()),
            "releases": [f"{x.chart}@{x.version}" for x in r.releases()],
        }
        for r in plan.regions
    ]
    if root.json:
        console.emit_json(
            {"stack": resolved.stack, "out": str(out), "regions": regions, "files": len(done.files)}
        )
    else:
        for plan_region in plan.regions:
            console.info(
                f"[green]✓[/green] {plan_region.region.name}: {len(plan_region.objects())} "
                f"objects, {len(plan_region.releases())} releases"
            )
        console.info(f"wrote {len(done.files)} files to {out}")
