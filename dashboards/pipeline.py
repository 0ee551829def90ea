"""Message pipeline: produce rate and latency, consumer lag, persist and route."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards._common import (
    DISPATCHER,
    base,
    dispatcher_rate,
    gateway_rate,
    quantiles,
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
    return (
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
