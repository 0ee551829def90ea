"""Load-test run: what the platform saw while a load test ran (gateway side of the run)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards._common import GATEWAY, base, gateway_rate, quantiles, series
from opsctl.spec import StackSpec

UID = "im-loadtest-run"


def build(spec: StackSpec) -> dashboard.Dashboard:
    buckets = gateway_rate("im_gateway_delivery_latency_seconds_bucket", by="le")
    connected = f"sum(im_gateway_connections_active{{{GATEWAY}}})"
    return (
        base(UID, "IM / Load-test run", "Open it on a run's time range (the report links it).")
        .time("now-30m", "now")
        .refresh("5s")
        .with_panel(series("Connected users", "short", (connected, "connections")))
        .with_panel(
            series(
                "Connection churn",
                "ops",
                (gateway_rate("im_gateway_connects_total"), "connects"),
                (gateway_rate("im_gateway_disconnects_total"), "disconnects"),
            )
        )
        .with_panel(
            series(
                "Throughput",
                "ops",
                (gateway_rate("im_gateway_messages_accepted_total"), "sent"),
                (gateway_rate("im_gateway_messages_delivered_total"), "delivered"),
                (gateway_rate("im_gateway_messages_failed_total"), "failed"),
            )
        )
        .with_panel(
            series(
                "Delivery latency",
                "s",
                *quantiles(buckets, 0.5, 0.95, 0.99),
            )
        )
    )
