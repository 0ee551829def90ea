"""Message pipeline: produce rate and latency, consumer lag, persist and route."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards._common import DISPATCHER, GATEWAY, RATE, base, series
from opsctl.spec import StackSpec

UID = "im-pipeline"


def build(spec: StackSpec) -> dashboard.Dashboard:
    produce = (
        f"sum by (le) (rate(im_gateway_kafka_produce_latency_seconds_bucket{{{GATEWAY}}}[{RATE}]))"
    )
    batch = (
        f"sum by (le) (rate(im_dispatcher_batch_latency_seconds_bucket{{{DISPATCHER}}}[{RATE}]))"
    )
    persist = (
        f"sum by (le) (rate(im_dispatcher_persist_latency_seconds_bucket{{{DISPATCHER}}}[{RATE}]))"
    )
    return (
        base(UID, "IM / Message pipeline", "Gateway -> Kafka -> dispatcher -> Cassandra and Redis.",
             instance_job="im-dispatcher")
        .with_row(dashboard.Row("Kafka"))
        .with_panel(
            series(
                "Produce rate and consumption", "ops",
                (f"sum(rate(im_gateway_messages_accepted_total{{{GATEWAY}}}[{RATE}]))", "produced (acked)"),
                (f"sum(rate(im_dispatcher_consumed_total{{{DISPATCHER}}}[{RATE}]))", "consumed"),
            )
        )
        .with_panel(
            series(
                "Produce latency (acks=all)", "s",
                (f"histogram_quantile(0.5, {produce})", "p50"),
                (f"histogram_quantile(0.99, {produce})", "p99"),
            )
        )
        .with_panel(
            series(
                "Consumer lag (messages)", "short",
                (f"sum by (partition) (im_dispatcher_consumer_lag{{{DISPATCHER}}})", "partition {{partition}}"),
            )
        )
        .with_panel(
            series(
                "Consumer lag (seconds to clear)", "s",
                (f"sum(im_dispatcher_consumer_lag{{{DISPATCHER}}}) / clamp_min(sum(rate(im_dispatcher_consumed_total{{{DISPATCHER}}}[{RATE}])), 1)", "lag"),
            )
        )
        .with_row(dashboard.Row("Dispatcher"))
        .with_panel(
            series(
                "Persisted and routed", "ops",
                (f"sum(rate(im_dispatcher_persisted_total{{{DISPATCHER}}}[{RATE}]))", "persisted"),
                (f"sum(rate(im_dispatcher_routed_total{{{DISPATCHER}}}[{RATE}]))", "routed"),
                (f"sum(rate(im_dispatcher_recipients_offline_total{{{DISPATCHER}}}[{RATE}]))", "recipients offline"),
            )
        )
        .with_panel(
            series(
                "Batch and persist latency p99", "s",
                (f"histogram_quantile(0.99, {batch})", "batch (consume to commit)"),
                (f"histogram_quantile(0.99, {persist})", "Cassandra write"),
            )
        )
        .with_panel(
            series(
                "Batch failures by stage", "ops",
                (f"sum by (stage) (rate(im_dispatcher_batch_failures_total{{{DISPATCHER}}}[{RATE}]))", "{{stage}}"),
            )
        )
    )  # fmt: skip
