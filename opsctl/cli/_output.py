"""What several command groups do alike with their results: write them per region, apply them
per region, and report the files or objects to people (table) or machines (json).

Heavy imports stay inside the functions, as in the command modules, so ``--help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from opsctl.cli._options import DryRunOption, KubeconfigOption, RegionOption, RootOptions
from opsctl.settings import OutputFormat, Settings

if TYPE_CHECKING:
    from opsctl.spec import Region

ObjectsFor = Callable[["Region"], list[dict[str, Any]]]
# What an ``apply`` command ships: the namespace, and the objects of each region.
NamespacedObjects = Callable[[typer.Context], tuple[str, ObjectsFor]]


def write_region_files(
    out: Path, regions: list[Region], file_name: str, objects_for: ObjectsFor
) -> list[str]:
    """Write each region's objects as one multi-document YAML file, out/<region>/<file_name>."""
    import yaml

    written = []
    for region in regions:
        path = out / region.name / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump_all(objects_for(region), sort_keys=False, width=1000))
        written.append(str(path))
    return written


def report_files(resolved: Settings, files: list[str]) -> None:
    """The files a command wrote: one path a line, or ``{"stack", "files"}`` as json."""
    from opsctl import console

    if resolved.output is OutputFormat.json:
        console.emit_json({"stack": resolved.stack, "files": files})
    else:
        for path in files:
            console.data_console().print(path)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Rows for people: a table titled ``title``, long cells folded."""
    from rich.table import Table

    from opsctl import console

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.data_console().print(table)


def apply_command(app: typer.Typer, *, kind: str) -> Callable[[NamespacedObjects], Any]:
    """Make the decorated function ``app``'s ``apply`` command, its docstring the help: what it
    returns (a namespace and each region's objects) is server-side applied to every region of
    the stack, or --region (:func:`apply_in_namespace`)."""

    def register(objects: NamespacedObjects) -> NamespacedObjects:
        @app.command("apply", help=objects.__doc__)
        def apply(
            ctx: typer.Context,
            *,
            region: RegionOption = None,
            kubeconfig: KubeconfigOption = None,
            dry_run: DryRunOption = False,
        ) -> None:
            from opsctl.kube import select_regions

            root = RootOptions.of(ctx)
            regions = select_regions(root.spec, region)
            namespace, objects_for = objects(ctx)
            apply_in_namespace(
                root.settings,
                regions,
                namespace,
                objects_for,
                kubeconfig=kubeconfig,
                dry_run=dry_run,
                kind=kind,
            )

        return objects

    return register


def apply_in_namespace(
    resolved: Settings,
    regions: list[Region],
    namespace: str,
    objects_for: ObjectsFor,
    *,
    kubeconfig: Path | None,
    dry_run: bool,
    kind: str,
) -> None:
    """Server-side apply each region's objects, with their namespace first, and report per region.

    ``kind`` names the objects in the report, e.g. "PrometheusRules"; the namespace is not counted.
    """
    from opsctl import console
    from opsctl.kube import apply_to_regions, default_kubeconfig

    namespace_object = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    applied = apply_to_regions(
        regions,
        lambda region: [namespace_object, *objects_for(region)],
        kubeconfig=kubeconfig or default_kubeconfig(),
        dry_run=dry_run,
    )
    if resolved.output is OutputFormat.json:
        console.emit_json({name: [str(o) for o in objs] for name, objs in applied.items()})
    verb = "validated" if dry_run else "applied"
    for name, objects in applied.items():
        skipped = [o for o in objects if not o.validated]
        if skipped:
            console.warn(
                f"{name}: {len(skipped)} objects not validated: their namespace "
                "does not exist yet (a real apply creates it first)"
            )
        console.info(f"[green]✓[/green] {name}: {verb} {len(objects) - 1} {kind}")
