"""Options shared by many commands, and the per-invocation settings they resolve to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from opsctl.settings import OutputFormat, Settings, resolve


def _complete_stack(incomplete: str) -> list[str]:
    from opsctl.paths import DEFAULT_INFRA_DIR
    from opsctl.spec import list_stacks

    return [name for name in list_stacks(DEFAULT_INFRA_DIR) if name.startswith(incomplete)]


StackOption = Annotated[
    str | None,
    typer.Option(
        "--stack",
        "-s",
        help="Stack name: infra/Pulumi.<stack>.yaml. [env: OPSCTL_STACK] [default: local]",
        autocompletion=_complete_stack,
        show_default=False,
    ),
]
OutputOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--output",
        "-o",
        help="table for people, json for machines. [env: OPSCTL_OUTPUT] [default: table]",
        show_default=False,
        case_sensitive=False,
    ),
]
InfraDirOption = Annotated[
    Path | None,
    typer.Option(
        "--infra-dir",
        help="Directory holding the Pulumi stack files. [env: OPSCTL_INFRA_DIR]",
        show_default=False,
        file_okay=False,
    ),
]


PrometheusOption = Annotated[
    str | None,
    typer.Option(
        "--prometheus-url",
        help="Prometheus to query. [env: OPSCTL_PROMETHEUS_URL] [default: the local stack's]",
        show_default=False,
    ),
]
AlertmanagerOption = Annotated[
    str | None,
    typer.Option(
        "--alertmanager-url",
        help="Alertmanager to use. [env: OPSCTL_ALERTMANAGER_URL] [default: the local stack's]",
        show_default=False,
    ),
]
LocalStateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="State dir of the local stack to find endpoints in. [env: OPSCTL_LOCAL_STATE_DIR]",
        file_okay=False,
        show_default=False,
    ),
]


KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="Kubeconfig holding the regions' contexts. "
        "[default: $KUBECONFIG, the simulated clusters', ~/.kube/config]",
        dir_okay=False,
        show_default=False,
    ),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Let the API server validate; change nothing.")
]
RegionOption = Annotated[
    str | None, typer.Option("--region", "-r", help="Only this region (default: every region).")
]


@dataclass
class RootOptions:
    """What the root callback saw; commands layer their own flags on top."""

    cli: dict[str, str | None] = field(default_factory=dict)


def settings(
    ctx: typer.Context, *, stack: str | None = None, output: OutputFormat | None = None
) -> Settings:
    """Resolve settings once: command flag > root flag > env var > config file > default."""
    root = ctx.find_object(RootOptions) or RootOptions()
    cli = dict(root.cli)
    if stack is not None:
        cli["stack"] = stack
    if output is not None:
        cli["output"] = output.value
    return resolve(cli)
