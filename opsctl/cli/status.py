"""opsctl status: how every region of a stack is doing, in one table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._options import (
    KubeconfigOption,
    LocalStateDirOption,
    PrometheusUrlOption,
    RootOptions,
    like,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from rich.table import Table

    from opsctl.status import RegionStatus


def _number(value: float | None, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def _short(error: str | None) -> str:
    """Errors are long; the table shows the gist, `-o json` the whole text."""
    if error is None:
        return "-"
    text = error.removeprefix("unreachable: ")
    return "unreachable" + (f" ({text[:40]}…)" if len(text) > 40 else f" ({text})")


_COLUMNS = (
    "region",
    "workloads",
    "conns",
    "msg/s",
    "p99",
    "SLO burn",
    "kafka lag",
    "cassandra",
    "redis",
    "firing",
)


# A multi-region stack's rows add these (docs/multi-region.md 8).
_MULTI_REGION_COLUMNS = ("homes", "repl lag", "conflicts")


def _multi_region_cells(row: RegionStatus) -> list[str]:
    homes = (
        f"{row.home_share:.1%}"
        if row.home_share is not None
        else f"[red]{_short(row.shard_map_error)}[/red]"
    )
    lag = row.values.get("replication_lag_s")
    conflicts = row.values.get("conflicts")
    shown = "-" if conflicts is None else f"{conflicts:,.0f}"
    if conflicts:
        shown = f"[red]{shown}[/red]"
    return [homes, _number(None if lag is None else lag * 1000, " ms"), shown]


def _table(stack: str, rows: list[RegionStatus], *, multi_region: bool = False) -> Table:
    from rich.table import Table

    table = Table(title=f"status of '{stack}'", title_justify="left")
    columns = _COLUMNS + (_MULTI_REGION_COLUMNS if multi_region else ())
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        extra = _multi_region_cells(row) if multi_region else []
        if not row.reachable:
            kube, prometheus = _short(row.kube_error), _short(row.prometheus_error)
            blanks = [""] * (len(_COLUMNS) - 3)
            table.add_row(
                row.region, f"[red]{kube}[/red]", *blanks, f"[red]{prometheus}[/red]", *extra
            )
            continue
        values = row.values
        workloads = (
            (row.kube_error or "-")
            if row.workloads_desired is None
            else (f"{row.workloads_ready}/{row.workloads_desired}")
        )
        burns = [b for b in row.slo_burn.values() if b is not None]
        health = {None: "-", 0.0: "[red]down[/red]", 1.0: "ok"}
        p99_s = values.get("delivery_p99_s")
        if row.prometheus_error:
            firing = _short(row.prometheus_error)
        else:
            firing = ", ".join(row.firing) if row.firing else "none"
        table.add_row(
            row.region,
            workloads,
            _number(values.get("connections")),
            _number(values.get("messages_per_s"), digits=1),
            _number(None if p99_s is None else p99_s * 1000, " ms"),
            _number(max(burns) if burns else None, "x", 2),
            _number(values.get("kafka_lag")),
            health.get(values.get("cassandra_up"), "?"),
            health.get(values.get("redis_up"), "?"),
            firing,
            *extra,
        )
    return table


def status(
    ctx: typer.Context,
    *,
    prometheus_url: Annotated[
        list[str] | None,
        like(
            PrometheusUrlOption,
            help="REGION=URL of a region's Prometheus (repeatable; a bare URL for one region). "
            "[default: the API server's service proxy, or the local stack's for stack local]",
        ),
    ] = None,
    kubeconfig: KubeconfigOption = None,
    watch: Annotated[bool, typer.Option(help="Refresh until interrupted.")] = False,
    interval: Annotated[
        float, typer.Option(help="Seconds between refreshes with --watch.", min=1)
    ] = 5,
    state_dir: LocalStateDirOption = None,
) -> None:
    """One row per region: workloads, load, p99, SLO burn, Kafka lag, stores and alerts."""
    import time

    from opsctl import console, endpoints
    from opsctl import status as status_domain
    from opsctl.errors import UserInputError
    from opsctl.kube import default_kubeconfig

    root = RootOptions.of(ctx)
    spec = root.spec
    urls = status_domain.parse_prometheus_urls(prometheus_url or [], spec)
    if spec.environment == "local" and len(urls) < len(spec.regions):
        try:  # the local stack's Prometheus, when one is running
            local = endpoints.resolve(local_state_dir=state_dir).prometheus
            urls.setdefault(spec.regions[0].name, local)
        except UserInputError:
            pass
    config = kubeconfig or default_kubeconfig()
    multi_region = len(spec.regions) > 1
    shared, shard_map = _local_multi_region(root.stack, state_dir) if multi_region else (None, None)

    def rows() -> list[RegionStatus]:
        return status_domain.collect(
            spec,
            kubeconfig=config,
            prometheus_urls=urls,
            shared_prometheus_url=shared,
            shard_map=shard_map,
        )

    def table() -> Table:
        return _table(root.stack, rows(), multi_region=multi_region)

    if root.json:
        console.emit_json([row.as_dict() for row in rows()])
        return
    if not watch:
        console.data_console().print(table())
        return
    from rich.live import Live

    with Live(table(), console=console.data_console(), auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(table(), refresh=True)


def _local_multi_region(
    stack: str, state_dir: Path | None
) -> tuple[str | None, Callable[[], dict[str, float]] | None]:
    """The Prometheus and the shard map of a running local stack of this (multi-region)
    stack, if ``state_dir`` (or the default) holds one; else (None, None)."""
    from opsctl.errors import OpsctlError
    from opsctl.local import LocalStack, resolve_state_dir

    try:
        local = LocalStack.recorded(resolve_state_dir(state_dir))
    except OpsctlError:  # none recorded there, or not readable: not a source
        return None, None
    if local.config.spec_stack != stack or not any(local.running().values()):
        return None, None

    def homes() -> dict[str, float]:
        from opsctl.region import LocalRegions, read_map

        return read_map(LocalRegions.of(local, stack)).home_share

    return local.info.prometheus_url, homes
