"""Message pipeline: produce rate and latency, consumer lag, persist and route; with several
regions, what crosses them (docs/multi-region.md section 8)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards._common import (
    DISPATCHER,
    RATE,
    RELAY,
    base,
    dispatcher_rate,
    gateway_rate,
    quantiles,
    relay_rate,
    series,
    summed,
)
from opsctl.spec import StackSpec

UID = "im-pipeline"


def build(spec: StackSpec) -> dashboard.Dashboard:
    produce = gateway_rate("im_gateway_kafka_produce_latency_seconds_bucket", by="le")
    batch = dispatcher_rate("im_dispatcher_batch_latency_seconds_bucket", by="le")
    persist = dispatcher_rate("im_dispatcher_persist_latency_seconds_bucket", by="le")
    consumed = dispatcher_rate("im_dispatcher_consumed_total")
    lag = f"im_dispatcher_consumer_lag{{{DISPATCHER}}}"
    description = "Gateway -> Kafka -> dispatcher -> Cassandra and Redis."
    board = (
        base(UID, "IM / Message pipeline", description, instance_job="im-dispatcher")
        .with_row(dashboard.Row("Kafka"))
        .with_panel(
            series(
                "Produce rate and consumption",
                "ops",
                (gateway_rate("im_gateway_messages_accepted_total"), "produced (acked)"),
                (consumed, "consumed"),
            )
        )
        .with_panel(
            series(
                "Produce latency (acks=all)",
                "s",
                *quantiles(produce, 0.5, 0.99),
            )
        )
        .with_panel(
            series(
                "Consumer lag (messages)",
                "short",
                (summed(lag, by="partition"), "partition {{partition}}"),
            )
        )
        .with_panel(
            series(
                "Consumer lag (seconds to clear)",
                "s",
                (f"{summed(lag)} / clamp_min({consumed}, 1)", "lag"),
            )
        )
        .with_row(dashboard.Row("Dispatcher"))
        .with_panel(
            series(
                "Persisted and routed",
                "ops",
                (dispatcher_rate("im_dispatcher_persisted_total"), "persisted"),
                (dispatcher_rate("im_dispatcher_routed_total"), "routed"),
                (dispatcher_rate("im_dispatcher_recipients_offline_total"), "recipients offline"),
            )
        )
        .with_panel(
            series(
                "Batch and persist latency p99",
                "s",
                (f"histogram_quantile(0.99, {batch})", "batch (consume to commit)"),
                (f"histogram_quantile(0.99, {persist})", "Cassandra write"),
            )
        )
        .with_panel(
            series(
                "Batch failures by stage",
                "ops",
                (dispatcher_rate("im_dispatcher_batch_failures_total", by="stage"), "{{stage}}"),
            )
        )
    )
    if len(spec.regions) > 1:
        board = cross_region_row(board)
    return board


def cross_region_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    """Homes, fencing and the relays (docs/multi-region.md sections 3 to 6 and 8)."""
    relay_latency = relay_rate("im_relay_delivery_latency_seconds_bucket", by="le, source")
    return (
        board.with_row(dashboard.Row("Cross-region"))
        .with_panel(
            series(
                "Records skipped as foreign, and held",
                "ops",
                (
                    dispatcher_rate("im_dispatcher_foreign_records_total", by="region"),
                    "foreign {{region}}",
                ),
                (
                    dispatcher_rate("im_dispatcher_held_records_total", by="region"),
                    "held {{region}}",
                ),
                description=(
                    "Foreign: records another region homes (it sequences them). Held: records of"
                    " a draining shard, or stamped before their shard moved, until reconciliation."
                ),
            )
        )
        .with_panel(
            series(
                "Fencing refusals and seq gaps",
                "ops",
                (
                    dispatcher_rate("im_dispatcher_fencing_refusals_total", by="region"),
                    "refusals {{region}}",
                ),
                (dispatcher_rate("im_dispatcher_seq_gaps_total", by="region"), "gaps {{region}}"),
                description=(
                    "Reservations refused because another writer holds the fence, and in-doubt"
                    " ranges announced on a takeover without a release marker."
                ),
            )
        )
        .with_panel(
            series(
                "Relay deliveries by source region",
                "ops",
                (
                    relay_rate("im_relay_applied_total", by="source, region"),
                    "{{source}} -> {{region}}",
                ),
                (relay_rate("im_relay_routed_total", by="region"), "routed in {{region}}"),
            )
        )
        .with_panel(
            series(
                "Replication lag (relay beacons)",
                "s",
                (
                    f"max by (source, target) (im_relay_replication_lag_seconds{{{RELAY}}})",
                    "{{source}} -> {{target}}",
                ),
                description="Age of the newest beacon from each source region on arrival.",
            )
        )
        .with_panel(
            series(
                "Cross-region delivery latency p99 by home region",
                "s",
                (f"histogram_quantile(0.99, {relay_latency})", "from {{source}}"),
            )
        )
        .with_panel(
            series(
                "Shard map epoch",
                "short",
                (f"max by (region) (im_dispatcher_map_epoch{{{DISPATCHER}}})", "{{region}}"),
                description="The epoch each region's dispatchers applied; they converge within seconds.",
            )
        )
        .with_panel(
            series(
                "Conflict prober: (conversation, seq) pairs naming two messages",
                "short",
                (f"sum(im_prober_conflicts_total{{{RELAY}}})", "found (since the relays started)"),
                (f"sum(increase(im_prober_conflicts_total{{{RELAY}}}[{RATE}]))", "new"),
                description=(
                    "Must stay 0: any conflict breaks the promise that no seq names two messages"
                    " (ImCrossRegionConflict, docs/multi-region.md 8.1)."
                ),
            )
        )
        .with_panel(
            series(
                "Conflict prober: age of the last run",
                "s",
                (
                    f"time() - max by (region) (im_prober_last_run_timestamp_seconds{{{RELAY}}})",
                    "{{region}}",
                ),
                description=(
                    "Seconds since a relay of the region finished a probe run; it grows while no"
                    " prober runs there (ImConflictProberStale)."
                ),
            )
        )
    )
