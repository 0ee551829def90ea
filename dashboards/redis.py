"""Redis: availability, memory against maxmemory, evictions, clients, replication."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards._common import REGION, base, rate, series
from opsctl.spec import StackSpec

UID = "im-redis"
NODE = f'job="redis", {REGION}, instance=~"$instance"'


def build(spec: StackSpec) -> dashboard.Dashboard:
    description = "Presence, routing, dedup and the first-level cache."
    return (
        base(UID, "IM / Redis", description, instance_job="redis")
        .with_panel(series("Up", "short", (f"redis_up{{{NODE}}}", "{{instance}}")))
        .with_panel(
            series(
                "Memory",
                "bytes",
                (f"redis_memory_used_bytes{{{NODE}}}", "used {{instance}}"),
                (f"redis_memory_max_bytes{{{NODE}}}", "maxmemory {{instance}}"),
            )
        )
        .with_panel(
            series(
                "Evictions and rejected connections",
                "ops",
                (rate("redis_evicted_keys_total", NODE), "evicted {{instance}}"),
                (rate("redis_rejected_connections_total", NODE), "rejected {{instance}}"),
            )
        )
        .with_panel(
            series(
                "Replication link",
                "short",
                (f"redis_master_link_up{{{NODE}}}", "link up {{instance}}"),
            )
        )
    )
