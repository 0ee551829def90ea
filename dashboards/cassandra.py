"""Cassandra: node health, client latency, dropped mutations, compactions, hints."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards._common import REGION, base, rate, series, summed
from opsctl.spec import StackSpec

UID = "im-cassandra"
NODE = f'job="cassandra", {REGION}, instance=~"$instance"'


def build(spec: StackSpec) -> dashboard.Dashboard:
    description = "Message store: per-node health and latency."
    down = f"max(cassandra_failuredetector_downendpointcount{{{NODE}}})"
    p99 = f'cassandra_clientrequest_latency_seconds{{{NODE}, quantile="0.99"}}'
    dropped = rate("cassandra_droppedmessage_dropped_total", f'{NODE}, scope="MUTATION"')
    pending = f"max by (instance) (cassandra_compaction_pendingtasks{{{NODE}}})"
    hints = summed(rate("cassandra_storage_totalhints_total", NODE), by="instance")
    return (
        base(UID, "IM / Cassandra", description, instance_job="cassandra")
        .with_panel(
            series("Nodes up", "short", (f"sum(up{{{NODE}}})", "up"), (down, "down (gossip)"))
        )
        .with_panel(
            series(
                "Client request p99",
                "s",
                (f"max by (instance, scope) ({p99})", "{{scope}} {{instance}}"),
            )
        )
        .with_panel(
            series("Dropped mutations", "ops", (summed(dropped, by="instance"), "{{instance}}"))
        )
        .with_panel(series("Pending compactions", "short", (pending, "{{instance}}")))
        .with_panel(series("Hints written", "ops", (hints, "{{instance}}")))
    )
