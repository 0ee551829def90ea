"""Load-test run: what the platform saw while a load test ran (gateway side of the run)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards._common import GATEWAY, base, rate, series, summed
from opsctl.spec import StackSpec

UID = "im-loadtest-run"


def _total(metric: str) -> str:
    return summed(rate(metric, GATEWAY))


def build(spec: StackSpec) -> dashboard.Dashboard:
    buckets = summed(rate("im_gateway_delivery_latency_seconds_bucket", GATEWAY), by="le")
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
                (_total("im_gateway_connects_total"), "connects"),
                (_total("im_gateway_disconnects_total"), "disconnects"),
            )
        )
        .with_panel(
            series(
                "Throughput",
                "ops",
                (_total("im_gateway_messages_accepted_total"), "sent"),
                (_total("im_gateway_messages_delivered_total"), "delivered"),
                (_total("im_gateway_messages_failed_total"), "failed"),
            )
        )
        .with_panel(
            series(
                "Delivery latency",
                "s",
                (f"histogram_quantile(0.5, {buckets})", "p50"),
                (f"histogram_quantile(0.95, {buckets})", "p95"),
                (f"histogram_quantile(0.99, {buckets})", "p99"),
            )
        )
    )
