"""Cassandra: node health, client latency, dropped mutations, compactions, hints."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards._common import RATE, REGION, base, series
from opsctl.spec import StackSpec

UID = "im-cassandra"
NODE = f'job="cassandra", {REGION}, instance=~"$instance"'


def build(spec: StackSpec) -> dashboard.Dashboard:
    return (
        base(UID, "IM / Cassandra", "Message store: per-node health and latency.",
             instance_job="cassandra")
        .with_panel(series("Nodes up", "short", (f"sum(up{{{NODE}}})", "up"),
                           (f"max(cassandra_failuredetector_downendpointcount{{{NODE}}})", "down (gossip)")))
        .with_panel(series("Client request p99", "s",
                           (f'max by (instance, scope) (cassandra_clientrequest_latency_seconds{{{NODE}, quantile="0.99"}})',
                            "{{scope}} {{instance}}")))
        .with_panel(series("Dropped mutations", "ops",
                           (f'sum by (instance) (rate(cassandra_droppedmessage_dropped_total{{{NODE}, scope="MUTATION"}}[{RATE}]))',
                            "{{instance}}")))
        .with_panel(series("Pending compactions", "short",
                           (f"max by (instance) (cassandra_compaction_pendingtasks{{{NODE}}})", "{{instance}}")))
        .with_panel(series("Hints written", "ops",
                           (f"sum by (instance) (rate(cassandra_storage_totalhints_total{{{NODE}}}[{RATE}]))", "{{instance}}")))
    )  # fmt: skip
