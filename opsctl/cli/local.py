"""opsctl local: run the IM stack (Redis, Kafka, Cassandra, Prometheus, Alertmanager, gateways,
dispatcher) as local processes on 127.0.0.1; with a two-region spec (`--stack staging`), every
region of it (a Kafka, Redis, Cassandra DC and IM processes each, MirrorMaker 2 between them)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._group import OpsctlGroup, help_values
from opsctl.cli._options import KubeconfigOption, LocalStateDirOption, OnRoot, RootOptions, like

if TYPE_CHECKING:
    from opsctl.local import LocalStack, StackInfo

app = typer.Typer(
    cls=OpsctlGroup,
    help="Run the IM stack locally: `up`, `status`, `logs`, `down`. "
    "Everything lives under one state dir; `--stack staging` runs both of its regions.",
    no_args_is_help=True,
)


@help_values("local")
def _constants() -> dict[str, object]:
    from opsctl.local import _config, _stack
    from opsctl.paths import REPO_ROOT

    return {
        "state_dir": _config.DEFAULT_STATE_DIR.relative_to(REPO_ROOT),
        "env_state_dir": _config.ENV_STATE_DIR,
        "base_port": _config.DEFAULT_BASE_PORT,
        "env_base_port": _config.ENV_BASE_PORT,
        "ports": ", ".join(_config.Ports.model_fields),
        "gateways": _config.DEFAULT_GATEWAYS,
        "region_gateways": _config.DEFAULT_REGION_GATEWAYS,
        "max_regions": _config.MAX_LOCAL_REGIONS,
        "env_gateways": _config.ENV_GATEWAYS,
        "rules": ", ".join(_config.LocalConfig.model_fields["rule_globs"].default),
        "env_kubeconfig": _config.ENV_KUBECONFIG,
        "env_kube_context": _config.ENV_KUBE_CONTEXT,
        "migrate": _stack.MIGRATE,
    }


@dataclass(frozen=True)
class LocalTarget(OnRoot):
    """The local stack the commands work on: the one in ``state_dir``."""

    state_dir_flag: Path | None

    @cached_property
    def state_dir(self) -> Path:
        """--state-dir > $OPSCTL_LOCAL_STATE_DIR > .state/local."""
        from opsctl.local import resolve_state_dir

        return resolve_state_dir(self.state_dir_flag)

    def recorded(self, *, progress: bool = False) -> LocalStack:
        """The stack recorded in the state dir (exit 2 when there is none)."""
        from opsctl import console
        from opsctl.local import LocalStack
        from opsctl.local._progress import RichReporter

        show = progress and console.verbosity >= 0
        return LocalStack.recorded(
            self.state_dir, reporter=RichReporter(console.console) if show else None
        )


@app.callback()
def target(
    ctx: typer.Context,
    *,
    state_dir: Annotated[
        Path | None,
        like(
            LocalStateDirOption,
            help="Where the stack keeps data, configs, pid files and logs. "
            "[env: {local.env_state_dir}] [default: {local.state_dir}]",
        ),
    ] = None,
) -> None:
    """Every local command takes --state-dir (also after it)."""
    ctx.obj = LocalTarget(RootOptions.of(ctx), state_dir)


@app.command()
def up(
    ctx: typer.Context,
    *,
    base_port: Annotated[
        int | None,
        typer.Option(
            help="First port of the stack's block; components use fixed offsets from it. "
            "[env: {local.env_base_port}] [default: {local.base_port}]",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        list[str] | None,
        typer.Option(
            "--port",
            metavar="NAME=PORT",
            help="Override one port, NAME=PORT ({local.ports}). Repeatable.",
            show_default=False,
        ),
    ] = None,
    gateways: Annotated[
        int | None,
        typer.Option(
            help="How many gateways to run (per region). [env: {local.env_gateways}] "
            "[default: {local.gateways}; {local.region_gateways} per region of a multi-region "
            "stack]",
            show_default=False,
        ),
    ] = None,
    infra_only: Annotated[
        bool,
        typer.Option(
            "--infra-only",
            help="Only the stores, Kafka and the monitoring; no gateways, no dispatcher.",
        ),
    ] = False,
    rules: Annotated[
        list[str] | None,
        typer.Option(
            "--rules",
            metavar="GLOB",
            help="Alert rule file glob for Prometheus, relative to the repo. Repeatable. "
            "[default: {local.rules}]",
            show_default=False,
        ),
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        like(
            KubeconfigOption,
            help="Also run kube-state-metrics against this cluster (job kube-state-metrics). "
            "[env: {local.env_kubeconfig}] [default: no cluster]",
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            help="The kubeconfig context to watch. [env: {local.env_kube_context}] "
            "[default: the kubeconfig's current-context]",
            show_default=False,
        ),
    ] = None,
    no_exporters: Annotated[
        bool,
        typer.Option(
            "--no-exporters",
            help="Skip the JMX agents, redis_exporter and the Redis replica (faster, but the "
            "Kafka/Cassandra/Redis alert rules have no data).",
        ),
    ] = False,
) -> None:
    """Start the stack (or whatever of it is not running) and wait until every part is healthy.

    The stack spec (--stack, default local) says what runs: a one-region spec runs one copy;
    a two-region spec (staging) runs every region, each with its own Kafka, Redis, Cassandra DC
    (plus a witness DC), gateways and dispatcher, and MirrorMaker 2 between the Kafkas; its
    regions take consecutive port blocks from the base port. Specs with more than
    {local.max_regions} regions are refused (exit 2).

    Idempotent: running components are reported and left alone. If a component fails, its log
    tail is shown and everything started is stopped again (exit 1). A taken port: exit 2.
    """
    from opsctl import console
    from opsctl.local import LocalStack, parse_port_overrides, resolve_config
    from opsctl.local._config import SpecValues
    from opsctl.local._progress import RichReporter
    from opsctl.spec import load_stack

    target = LocalTarget.of(ctx)
    stack_name, infra_dir = target.settings.stack, target.settings.infra_dir
    # Bad input (an unknown stack, too many regions) fails here, before anything starts.
    spec = SpecValues.from_spec(load_stack(infra_dir, stack_name), stack_name)
    config = resolve_config(
        state_dir=target.state_dir_flag,
        base_port=base_port,
        port_overrides=parse_port_overrides(port or []),
        gateways=gateways,
        im=not infra_only,
        infra_dir=target.settings.infra_dir,
        rule_globs=tuple(rules) if rules else None,
        kubeconfig=kubeconfig,
        kube_context=context,
        exporters=not no_exporters,
        spec_stack=stack_name,
        regions=len(spec.region_names),
    )
    reporter = RichReporter(console.console) if console.verbosity >= 0 else None
    stack = LocalStack(config, reporter=reporter, spec=spec)
    where = f" ({', '.join(spec.region_names)})" if spec.multi_region else ""
    console.info(f"local stack '{stack_name}'{where} in {config.state_dir}")
    info = stack.up()
    if target.json:
        console.emit_json(info.as_dict())
        return
    console.info("[green]✓[/green] local stack is up")
    data = console.data_console()
    for label, value in _endpoint_lines(info, im=config.im, multi_region=spec.multi_region):
        data.print(f"{label:<13} {value}", markup=False)


def _endpoint_lines(info: StackInfo, *, im: bool, multi_region: bool) -> list[tuple[str, str]]:
    """What `up` prints: every region's endpoints, then the shared ones."""
    lines: list[tuple[str, str]] = []
    for region in info.regions:
        prefix = f"{region.name} " if multi_region else ""
        lines += [
            (f"{prefix}gateways", "  ".join(region.gateway_ws_urls) if im else "(infra only)"),
            (f"{prefix}redis", region.redis_url),
            (f"{prefix}kafka", region.kafka_bootstrap),
            (f"{prefix}cassandra", region.cassandra_hosts),
        ]
    lines += [
        ("prometheus", info.prometheus_url),
        ("alertmanager", info.alertmanager_url),
        *((f"{job} metrics", "  ".join(urls)) for job, urls in info.metrics_urls.items()),
        ("jwt secret", str(info.jwt_secret_file)),
    ]
    if multi_region:
        lines.append(("jwt", f"issuer {info.jwt_issuer}, audience {info.jwt_audience}"))
    return lines


@app.command()
def down(
    ctx: typer.Context,
    *,
    wipe: Annotated[
        bool, typer.Option("--wipe", help="Also delete the data, configs, logs and secret.")
    ] = False,
) -> None:
    """Stop every process of the stack (reverse order: SIGTERM, wait, SIGKILL)."""
    from opsctl import console
    from opsctl.local import load_recorded

    target = LocalTarget.of(ctx)
    if load_recorded(target.state_dir) is None:
        console.info(f"no local stack in {target.state_dir}; nothing to stop")
        return
    stack = target.recorded(progress=True)
    stopped = stack.down(wipe=wipe)
    what = f"stopped {len(stopped)} component(s)" if stopped else "nothing was running"
    console.info(f"[green]✓[/green] {what}" + ("; data wiped" if wipe else ""))


@app.command()
def status(ctx: typer.Context) -> None:
    """Each component with its pid, port and health. Exit 1 unless all are healthy."""
    from rich.table import Table

    from opsctl import console
    from opsctl.errors import CheckFailed

    target = LocalTarget.of(ctx)
    stack = target.recorded()
    rows = stack.status()
    unhealthy = [row.name for row in rows if not row.healthy]
    info = stack.info
    if target.json:
        console.emit_json(
            {
                "state_dir": str(stack.config.state_dir),
                "stack": info.stack,
                "healthy": not unhealthy,
                "components": [row.as_dict() for row in rows],
                # Every region's endpoints, and the token settings shared by all of them.
                "regions": [region.as_dict() for region in info.regions],
                "prometheus_url": info.prometheus_url,
                "alertmanager_url": info.alertmanager_url,
                "jwt_secret_file": str(info.jwt_secret_file),
                "jwt_issuer": info.jwt_issuer,
                "jwt_audience": info.jwt_audience,
            }
        )
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("COMPONENT", "PID", "PORT", "HEALTH", "DETAIL"):
            table.add_column(column)
        for row in rows:
            health = "[green]healthy[/green]" if row.healthy else "[red]down[/red]"
            if row.running and not row.healthy:
                health = "[yellow]unhealthy[/yellow]"
            table.add_row(row.name, str(row.pid or "-"), str(row.port), health, row.detail)
        data = console.data_console()
        data.print(table)
        if stack.multi_region:
            data.print("")
            for label, value in _endpoint_lines(info, im=stack.config.im, multi_region=True):
                data.print(f"{label:<20} {value}", markup=False)
    if unhealthy:
        raise CheckFailed(f"{len(unhealthy)} of {len(rows)} not healthy: {', '.join(unhealthy)}")


@app.command()
def logs(
    ctx: typer.Context,
    component: Annotated[
        str,
        typer.Argument(
            help="A component as `opsctl local status` lists it (gateways are gw-1, gw-2, ...; "
            "in a multi-region stack REGION/gw-1, REGION/kafka, mirrormaker, ...), "
            "or {local.migrate} (REGION/{local.migrate})."
        ),
    ],
    *,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines.", min=0)] = 50,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C stops).")
    ] = False,
) -> None:
    """Print a component's log (its stdout and stderr)."""
    import sys

    stack = LocalTarget.of(ctx).recorded()
    if follow:
        for line in stack.follow(component, lines):
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        return
    for line in stack.tail(component, lines):
        sys.stdout.write(line + "\n")
