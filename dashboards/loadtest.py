"""Load-test run: what the platform saw while a load test ran (gateway side of the run)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards._common import GATEWAY, RATE, base, series
from opsctl.spec import StackSpec

UID = "im-loadtest-run"


def build(spec: StackSpec) -> dashboard.Dashboard:
    buckets = f"sum by (le) (rate(im_gateway_delivery_latency_seconds_bucket{{{GATEWAY}}}[{RATE}]))"
    return (
        base(UID, "IM / Load-test run", "Open it on a run's time range (the report links it).")
        .time("now-30m", "now")
        .refresh("5s")
        .with_panel(series("Connected users", "short",
                           (f"sum(im_gateway_connections_active{{{GATEWAY}}})", "connections")))
        .with_panel(series("Connection churn", "ops",
                           (f"sum(rate(im_gateway_connects_total{{{GATEWAY}}}[{RATE}]))", "connects"),
                           (f"sum(rate(im_gateway_disconnects_total{{{GATEWAY}}}[{RATE}]))", "disconnects")))
        .with_panel(series("Throughput", "ops",
                           (f"sum(rate(im_gateway_messages_accepted_total{{{GATEWAY}}}[{RATE}]))", "sent"),
                           (f"sum(rate(im_gateway_messages_delivered_total{{{GATEWAY}}}[{RATE}]))", "delivered"),
                           (f"sum(rate(im_gateway_messages_failed_total{{{GATEWAY}}}[{RATE}]))", "failed")))
        .with_panel(series("Delivery latency", "s",
                           (f"histogram_quantile(0.5, {buckets})", "p50"),
                           (f"histogram_quantile(0.95, {buckets})", "p95"),
                           (f"histogram_quantile(0.99, {buckets})", "p99")))
    )  # fmt: skip
