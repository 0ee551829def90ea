"""Human views of a stack spec (tables); machine views are plain model dumps."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from opsctl.spec._model import StackSpec


def region_rows(spec: StackSpec) -> list[dict[str, Any]]:
    rows = []
    for region in spec.regions:
        capacity = region.gateway.max_replicas * region.gateway.connections_per_pod
        headroom = (
            round(100 * (capacity - region.peak_concurrent_users) / capacity, 1)
            if capacity
            else 0.0
        )
        rows.append(
            {
                "name": region.name,
                "role": region.role,
                "kubeContext": region.kube_context,
                "zones": list(region.zones),
                "peakConcurrentUsers": region.peak_concurrent_users,
                "gatewayReplicas": region.gateway.replicas,
                "gatewayMaxReplicas": region.gateway.max_replicas,
                "gatewayCapacity": capacity,
                "headroomPercent": headroom,
            }
        )
    return rows


def render_regions(out: Console, spec: StackSpec) -> None:
    table = Table(
        title=f"regions of '{spec.environment}'",
        title_justify="left",
        caption="* primary region",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    # Numbers never wrap or truncate; a long context folds instead.
    table.add_column("region", no_wrap=True, min_width=12)
    table.add_column("context", overflow="fold")
    for numeric, width in (("peak users", 10), ("gateways", 8), ("capacity", 10), ("headroom", 8)):
        table.add_column(numeric, justify="right", no_wrap=True, min_width=width)
    for row in region_rows(spec):
        table.add_row(
            row["name"] + (" *" if row["role"] == "primary" else ""),
            row["kubeContext"],
            f"{row['peakConcurrentUsers']:,}",
            f"{row['gatewayReplicas']}..{row['gatewayMaxReplicas']}",
            f"{row['gatewayCapacity']:,}",
            f"{row['headroomPercent']}%",
        )
    out.print(table)


def _sizing_sheet(spec: StackSpec) -> Table:
    """One column per region, one row per sized thing: reads like a capacity plan."""
    table = Table(title="sizing per region", title_justify="left")
    table.add_column("")
    for region in spec.regions:
        table.add_column(f"{region.name} ({region.role})")
    rows: dict[str, list[str]] = {}
    for region in spec.regions:
        gateway, kafka, cassandra, redis = (
            region.gateway,
            region.kafka,
            region.cassandra,
            region.redis,
        )
        cells = {
            "kube context": region.kube_context,
            "zones": ", ".join(region.zones),
            "peak users": f"{region.peak_concurrent_users:,}",
            "gateway pods": f"{gateway.replicas}..{gateway.max_replicas}",
            "connections/pod": f"{gateway.connections_per_pod:,}",
            "dispatcher pods": f"{region.dispatcher.replicas}..{region.dispatcher.max_replicas}",
            "kafka": f"{kafka.brokers} brokers, {kafka.message_partitions} partitions",
            "kafka replication": (
                f"RF {kafka.replication_factor}, minISR {kafka.min_insync_replicas}"
            ),
            "kafka storage": f"{kafka.storage}/broker",
            "cassandra": f"{cassandra.nodes} nodes, RF {cassandra.replication_factor}",
            "cassandra storage": f"{cassandra.storage}/node",
            "redis": f"{redis.shards} shards x {redis.replicas_per_shard} replicas",
            "monitoring": f"{region.monitoring.retention}, {region.monitoring.storage}",
        }
        for label, cell in cells.items():
            rows.setdefault(label, []).append(cell)
    for label, cells_of_regions in rows.items():
        table.add_row(label, *cells_of_regions)
    return table


def render_spec(out: Console, stack: str, spec: StackSpec) -> None:
    slos = spec.slos
    out.print(f"[bold]stack[/bold] {stack}   [bold]environment[/bold] {spec.environment}")
    out.print(f"[bold]images[/bold] gateway {spec.images.gateway}")
    out.print(f"       dispatcher {spec.images.dispatcher}")
    out.print(
        f"[bold]SLOs[/bold] availability {slos.availability}%, delivery p99 "
        f"{slos.delivery_latency_p99_ms} ms, connect success {slos.connect_success}%"
    )
    budget = spec.reconnect_budget.reconnects_per_second
    out.print(f"[bold]reconnect budget[/bold] {budget}/s cluster-wide")
    for team in spec.alerting.teams:
        out.print(
            f"[bold]alert routing[/bold] team {team.name}: page {team.page_receiver}, "
            f"ticket {team.ticket_receiver}"
        )
    out.print(_sizing_sheet(spec))
