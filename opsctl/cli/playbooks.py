"""opsctl playbooks: inventories and host limits for the Ansible playbooks in playbooks/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opsctl.cli._group import OpsctlGroup, help_values
from opsctl.cli._options import RootOptions

app = typer.Typer(
    cls=OpsctlGroup, help="Ansible inventories and host limits for the playbooks in playbooks/."
)


@help_values("playbooks")
def _constants() -> dict[str, object]:
    from opsctl.hostlimits import load_limits

    return {"profiles": ", ".join(sorted(load_limits().profiles))}


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
        "--profile",
        help="Only this profile ({playbooks.profiles}). [default: all]",
        show_default=False,
    ),
]


@app.command()
def inventory(
    ctx: typer.Context,
    *,
    out: OutDirOption = None,
) -> None:
    """Generate the stack's inventory groups and vars from its spec (hosts stay in hosts.yml)."""
    from opsctl import console
    from opsctl.hostlimits import load_limits
    from opsctl.playbooks import build_inventory, default_inventory_dir, write_inventory
    from opsctl.spec import stack_file

    root = RootOptions.of(ctx)
    spec = root.spec
    spec_file = _shown(stack_file(root.settings.infra_dir, root.stack))
    generated = build_inventory(spec, root.stack, spec_file, load_limits())
    path = write_inventory(generated, out or default_inventory_dir(root.stack))
    if root.json:
        console.emit_json({"stack": root.stack, "file": str(path), "groups": generated.groups()})
    else:
        regions = ", ".join(region.name for region in spec.regions)
        console.info(f"[green]✓[/green] wrote {path} ({regions})")


@app.command()
def limits(
    ctx: typer.Context,
    *,
    profile: ProfileOption = None,
) -> None:
    """Show the host limits the roles apply and preflight checks (opsctl/hostlimits)."""
    from rich.table import Table

    from opsctl import console
    from opsctl.hostlimits import load_limits

    loaded = load_limits()
    names = [profile] if profile else sorted(loaded.profiles)
    chosen = [loaded.profile(name) for name in names]
    if RootOptions.of(ctx).json:
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
