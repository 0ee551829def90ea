"""opsctl playbooks: inventories and host limits for the Ansible playbooks in playbooks/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opsctl.cli._options import OutputOption, StackOption, settings
from opsctl.settings import OutputFormat

app = typer.Typer(help="Ansible inventories and host limits for the playbooks in playbooks/.")

OutDirOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Directory for generated.yml. [default: playbooks/inventories/<stack>]",
        show_default=False,
    ),
]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile", help="Only this profile (gateway_node, loadgen_host).", show_default=False
    ),
]


@app.command()
def inventory(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    out: OutDirOption = None,
    output: OutputOption = None,
) -> None:
    """Generate the stack's inventory groups and vars from its spec (hosts stay in hosts.yml)."""
    from opsctl import console
    from opsctl.hostlimits import load_limits
    from opsctl.playbooks import build_inventory, default_inventory_dir, write_inventory
    from opsctl.spec import load_stack, stack_file

    resolved = settings(ctx, stack=stack, output=output)
    spec = load_stack(resolved.infra_dir, resolved.stack)
    spec_file = _shown(stack_file(resolved.infra_dir, resolved.stack))
    generated = build_inventory(spec, resolved.stack, spec_file, load_limits())
    path = write_inventory(generated, out or default_inventory_dir(resolved.stack))
    if resolved.output is OutputFormat.json:
        console.emit_json(
            {"stack": resolved.stack, "file": str(path), "groups": generated.groups()}
        )
    else:
        regions = ", ".join(region.name for region in spec.regions)
        console.info(f"[green]✓[/green] wrote {path} ({regions})")


@app.command()
def limits(
    ctx: typer.Context,
    *,
    profile: ProfileOption = None,
    output: OutputOption = None,
) -> None:
    """Show the host limits the roles apply and preflight checks (opsctl/hostlimits)."""
    from rich.table import Table

    from opsctl import console
    from opsctl.hostlimits import load_limits

    resolved = settings(ctx, output=output)
    loaded = load_limits()
    names = [profile] if profile else sorted(loaded.profiles)
    chosen = [loaded.profile(name) for name in names]
    if resolved.output is OutputFormat.json:
        console.emit_json(
            {
                entry.name: {
                    "nofile": entry.nofile,
                    "memoryPerConnectionKib": entry.memory_per_connection_kib,
                    "ephemeralPorts": [entry.ephemeral_ports.low, entry.ephemeral_ports.high],
                    "conntrackMax": entry.conntrack_max,
                    "kernelModules": list(entry.kernel_modules),
                    "sysctls": {
                        s.key: {"value": s.value, "scope": s.scope.value} for s in entry.sysctls
                    },
                }
                for entry in chosen
            }
        )
        return
    table = Table(title=f"host limits ({loaded.file})")
    table.add_column("setting", no_wrap=True)
    table.add_column("scope")
    for entry in chosen:
        table.add_column(entry.name, justify="right")
    keys = list(dict.fromkeys(s.key for entry in chosen for s in entry.sysctls))
    table.add_row("nofile", "process", *(str(entry.nofile) for entry in chosen))
    table.add_row(
        "memory per connection",
        "process",
        *(f"{entry.memory_per_connection_kib} KiB" for entry in chosen),
    )
    for key in keys:
        values, scope = [], ""
        for entry in chosen:
            try:
                found = entry.sysctl(key)
            except KeyError:
                values.append("-")
                continue
            values.append(found.value)
            scope = found.scope.value
        table.add_row(key, scope, *values)
    console.data_console().print(table)


def _shown(path: Path) -> str:
    """Repo-relative when inside the repo, so generated files do not depend on the cwd."""
    from opsctl.paths import REPO_ROOT

    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
