"""opsctl local: run the IM stack (Redis, Kafka, Cassandra, Prometheus, Alertmanager, gateways,
dispatcher) as local processes on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._options import OutputOption, settings
from opsctl.settings import OutputFormat

if TYPE_CHECKING:
    from opsctl.local import LocalStack

app = typer.Typer(
    help="Run the IM stack locally: `up`, `status`, `logs`, `down`. "
    "Everything lives under one state dir.",
    no_args_is_help=True,
)

StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where the stack keeps data, configs, pid files and logs. "
        "[env: OPSCTL_LOCAL_STATE_DIR] [default: .state/local]",
        show_default=False,
        file_okay=False,
    ),
]


def _state_dir(value: Path | None) -> Path:
    from opsctl.local import resolve_state_dir

    return resolve_state_dir(value)


def _recorded(state_dir: Path | None) -> LocalStack:
    from opsctl import console
    from opsctl.local import LocalStack
    from opsctl.local._progress import RichReporter

    reporter = RichReporter(console.console) if console.verbosity >= 0 else None
    return LocalStack.recorded(_state_dir(state_dir), reporter=reporter)


@app.command()
def up(
    ctx: typer.Context,
    *,
    state_dir: StateDirOption = None,
    base_port: Annotated[
        int | None,
        typer.Option(
            help="First port of the stack's block; components use fixed offsets from it. "
            "[env: OPSCTL_LOCAL_BASE_PORT] [default: 19100]",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        list[str] | None,
        typer.Option(
            "--port",
            metavar="NAME=PORT",
            help="Override one port, NAME=PORT (redis, kafka, kafka_controller, cassandra, "
            "cassandra_storage, prometheus, alertmanager, alert_webhook, dispatcher, "
            "gateway_first, kafka_metrics, cassandra_metrics, redis_replica, redis_exporter, "
            "redis_replica_exporter, kube_state_metrics, kube_state_metrics_telemetry). "
            "Repeatable.",
            show_default=False,
        ),
    ] = None,
    gateways: Annotated[
        int | None,
        typer.Option(
            help="How many gateways to run. [env: OPSCTL_LOCAL_GATEWAYS] [default: 2]",
            show_default=False,
        ),
    ] = None,
    infra_only: Annotated[
        bool,
        typer.Option(
            "--infra-only", help="Only Redis, Kafka, Cassandra, Prometheus and Alertmanager."
        ),
    ] = False,
    rules: Annotated[
        list[str] | None,
        typer.Option(
            "--rules",
            metavar="GLOB",
            help="Alert rule file glob for Prometheus, relative to the repo. Repeatable. "
            "[default: alerts/rules/*.yaml, alerts/build/*.yaml]",
            show_default=False,
        ),
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            help="Also run kube-state-metrics against this cluster (job kube-state-metrics). "
            "[env: OPSCTL_LOCAL_KUBECONFIG] [default: no cluster]",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            help="The kubeconfig context to watch. [env: OPSCTL_LOCAL_KUBE_CONTEXT] "
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
    output: OutputOption = None,
) -> None:
    """Start the stack (or whatever of it is not running) and wait until every part is healthy.

    Idempotent: running components are reported and left alone. If a component fails, its log
    tail is shown and everything started is stopped again (exit 1). A taken port: exit 2.
    """
    from opsctl import console
    from opsctl.local import LocalStack, parse_port_overrides, resolve_config
    from opsctl.local._progress import RichReporter

    resolved = settings(ctx, output=output)
    config = resolve_config(
        state_dir=state_dir,
        base_port=base_port,
        port_overrides=parse_port_overrides(port or []),
        gateways=gateways,
        im=not infra_only,
        infra_dir=resolved.infra_dir,
        rule_globs=tuple(rules) if rules else None,
        kubeconfig=kubeconfig,
        kube_context=context,
        exporters=not no_exporters,
    )
    reporter = RichReporter(console.console) if console.verbosity >= 0 else None
    stack = LocalStack(config, reporter=reporter)
    console.info(f"local stack in {config.state_dir}")
    info = stack.up()
    if resolved.output is OutputFormat.json:
        console.emit_json(info.as_dict())
        return
    console.info("[green]✓[/green] local stack is up")
    data = console.data_console()
    for label, value in [
        ("gateways", "  ".join(info.gateway_ws_urls) if config.im else "(infra only)"),
        ("redis", info.redis_url),
        ("kafka", info.kafka_bootstrap),
        ("cassandra", info.cassandra_hosts),
        ("prometheus", info.prometheus_url),
        ("alertmanager", info.alertmanager_url),
        *((f"{job} metrics", "  ".join(urls)) for job, urls in info.metrics_urls.items()),
        ("jwt secret", str(info.jwt_secret_file)),
    ]:
        data.print(f"{label:<13} {value}", markup=False)


@app.command()
def down(
    *,
    state_dir: StateDirOption = None,
    wipe: Annotated[
        bool, typer.Option("--wipe", help="Also delete the data, configs, logs and secret.")
    ] = False,
) -> None:
    """Stop every process of the stack (reverse order: SIGTERM, wait, SIGKILL)."""
    from opsctl import console
    from opsctl.local import load_recorded

    if load_recorded(_state_dir(state_dir)) is None:
        console.info(f"no local stack in {_state_dir(state_dir)}; nothing to stop")
        return
    stack = _recorded(state_dir)
    stopped = stack.down(wipe=wipe)
    what = f"stopped {len(stopped)} component(s)" if stopped else "nothing was running"
    console.info(f"[green]✓[/green] {what}" + ("; data wiped" if wipe else ""))


@app.command()
def status(
    ctx: typer.Context, *, state_dir: StateDirOption = None, output: OutputOption = None
) -> None:
    """Each component with its pid, port and health. Exit 1 unless all are healthy."""
    from rich.table import Table

    from opsctl import console
    from opsctl.errors import CheckFailed
    from opsctl.local import LocalStack

    resolved = settings(ctx, output=output)
    stack = LocalStack.recorded(_state_dir(state_dir))
    rows = stack.status()
    unhealthy = [row.name for row in rows if not row.healthy]
    if resolved.output is OutputFormat.json:
        console.emit_json(
            {
                "state_dir": str(stack.config.state_dir),
                "healthy": not unhealthy,
                "components": [row.as_dict() for row in rows],
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
        console.data_console().print(table)
    if unhealthy:
        raise CheckFailed(f"{len(unhealthy)} of {len(rows)} not healthy: {', '.join(unhealthy)}")


@app.command()
def logs(
    component: Annotated[
        str,
        typer.Argument(
            help="redis, redis-replica, kafka, cassandra, prometheus, alertmanager, "
            "redis-exporter, redis-replica-exporter, kube-state-metrics, dispatcher, gw-N or "
            "migrate."
        ),
    ],
    *,
    state_dir: StateDirOption = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines.", min=0)] = 50,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C stops).")
    ] = False,
) -> None:
    """Print a component's log (its stdout and stderr)."""
    import sys

    from opsctl.local import LocalStack

    stack = LocalStack.recorded(_state_dir(state_dir))
    if follow:
        for line in stack.follow(component, lines):
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        return
    for line in stack.tail(component, lines):
        sys.stdout.write(line + "\n")
