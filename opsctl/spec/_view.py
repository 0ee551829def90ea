"""Human views of a stack spec (tables); machine views are plain model dumps."""

from __future__ import annotations

from typing import Any

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
    table = Table(title=f"regions of '{spec.environment}'", title_justify="left")
    for column in ("region", "role", "context", "zones", "peak users", "gateways", "capacity"):
        table.add_column(
            column, justify="right" if column in {"peak users", "capacity"} else "left"
        )
    for row in region_rows(spec):
        table.add_row(
            row["name"],
            row["role"],
            row["kubeContext"],
            ",".join(row["zones"]),
            f"{row['peakConcurrentUsers']:,}",
            f"{row['gatewayReplicas']}..{row['gatewayMaxReplicas']}",
            f"{row['gatewayCapacity']:,} ({row['headroomPercent']}% headroom)",
        )
    out.print(table)


def render_spec(out: Console, stack: str, spec: StackSpec) -> None:
    slos = spec.slos
    out.print(f"[bold]stack[/bold] {stack}   [bold]environment[/bold] {spec.environment}")
    out.print(
        f"[bold]images[/bold] gateway={spec.images.gateway} dispatcher={spec.images.dispatcher}"
    )
    out.print(
        f"[bold]SLOs[/bold] availability {slos.availability}% · delivery p99 "
        f"{slos.delivery_latency_p99_ms} ms · connect success {slos.connect_success}%"
    )
    budget = spec.reconnect_budget.reconnects_per_second
    out.print(f"[bold]reconnect budget[/bold] {budget}/s cluster-wide")
    teams = ", ".join(
        f"{team.name}→{team.page_receiver}/{team.ticket_receiver}" for team in spec.alerting.teams
    )
    out.print(f"[bold]alert routing[/bold] {teams}")
    render_regions(out, spec)

    table = Table(title="data stores per region", title_justify="left")
    for column in ("region", "dispatcher", "kafka", "cassandra", "redis", "monitoring"):
        table.add_column(column)
    for region in spec.regions:
        kafka, cassandra, redis = region.kafka, region.cassandra, region.redis
        table.add_row(
            region.name,
            f"{region.dispatcher.replicas}..{region.dispatcher.max_replicas}",
            f"{kafka.brokers} brokers, {kafka.message_partitions} partitions, "
            f"RF {kafka.replication_factor}/minISR {kafka.min_insync_replicas}, {kafka.storage}",
            f"{cassandra.nodes} nodes, RF {cassandra.replication_factor}, {cassandra.storage}",
            f"{redis.shards} shards x {redis.replicas_per_shard} replicas",
            f"{region.monitoring.retention}, {region.monitoring.storage}",
        )
    out.print(table)
