"""Gateway: connections, connects and disconnects, message RED, delivery latency, drains."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, heatmap
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from dashboards._common import DATASOURCE, GATEWAY, base, gateway_rate, quantiles, query, series
from opsctl.spec import StackSpec

UID = "im-gateway"


def build(spec: StackSpec) -> dashboard.Dashboard:
    buckets = gateway_rate("im_gateway_delivery_latency_seconds_bucket", by="le")
    latency_heatmap = (
        heatmap.Panel()
        .title("Delivery latency (sender accept to recipient socket)")
        .datasource(DATASOURCE)
        .with_target(query(buckets, "{{le}}").format(PromQueryFormat.HEATMAP))
        .height(8)
        .span(12)
    )
    threshold_s = spec.slos.delivery_latency_p99_ms / 1000
    per_pod = f"sum by (instance) (im_gateway_connections_active{{{GATEWAY}}})"
    queue_depth = f"sum by (instance) (im_gateway_send_queue_depth{{{GATEWAY}}})"
    return (
        base(UID, "IM / Gateway", "WebSocket gateways: load, churn, messages and latency.")
        .with_row(dashboard.Row("Connections"))
        .with_panel(
            series(
                "Connections per pod",
                "short",
                (per_pod, "{{instance}}"),
                (f"max(im_gateway_connections_limit{{{GATEWAY}}})", "per-pod limit"),
            )
        )
        .with_panel(
            series(
                "Connects by outcome",
                "ops",
                (gateway_rate("im_gateway_connects_total", by="reason"), "{{reason}}"),
            )
        )
        .with_panel(
            series(
                "Disconnects by reason",
                "ops",
                (gateway_rate("im_gateway_disconnects_total", by="reason"), "{{reason}}"),
            )
        )
        .with_panel(
            series(
                "Draining pods",
                "short",
                (f"sum(im_gateway_draining{{{GATEWAY}}})", "draining"),
                description="Pods that received SIGTERM and are moving their clients away.",
            )
        )
        .with_row(dashboard.Row("Messages (rate, errors, duration)"))
        .with_panel(
            series(
                "Messages",
                "ops",
                (gateway_rate("im_gateway_messages_accepted_total"), "accepted"),
                (gateway_rate("im_gateway_messages_delivered_total"), "delivered"),
            )
        )
        .with_panel(
            series(
                "Failed sends by reason",
                "ops",
                (gateway_rate("im_gateway_messages_failed_total", by="reason"), "{{reason}}"),
            )
        )
        .with_panel(latency_heatmap)
        .with_panel(
            series(
                "Delivery latency percentiles",
                "s",
                *quantiles(buckets, 0.5, 0.99),
                description=f"The SLO threshold is {threshold_s * 1000:g} ms at p99.",
            )
        )
        .with_row(dashboard.Row("Protection"))
        .with_panel(
            series(
                "Send queues",
                "short",
                (queue_depth, "depth {{instance}}"),
                (
                    gateway_rate("im_gateway_send_queue_drops_total", by="instance"),
                    "drops/s {{instance}}",
                ),
            )
        )
        .with_panel(
            series(
                "Auth failures and rate limiting",
                "ops",
                (gateway_rate("im_gateway_auth_failures_total", by="reason"), "auth {{reason}}"),
                (gateway_rate("im_gateway_rate_limited_total"), "rate limited"),
            )
        )
        .with_panel(
            series(
                "Kafka producer replacements",
                "ops",
                (
                    gateway_rate("im_gateway_kafka_producer_replacements_total", by="reason"),
                    "{{reason}}",
                ),
                description="A producer that could no longer deliver, replaced "
                "(docs/protocol.md 9.5); the pod is not ready meanwhile.",
            )
        )
    )
