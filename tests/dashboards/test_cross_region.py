"""The pipeline dashboard's cross-region row: present with several regions, absent with one,
and every metric it reads is one the dispatcher or relay (its conflict prober included) exports
(gateway/metrics.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics import DispatcherMetrics, ProberMetrics, RelayMetrics
from opsctl.dashboards import build_all, expressions, live_problems, structure_problems
from opsctl.local import LocalStack
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.prometheus import Prometheus
from opsctl.spec import load_stack
from tests.support import wait_for

ROW = "Cross-region"


def _row_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    panels, inside = [], False
    for panel in board["panels"]:
        if panel["type"] == "row":
            inside = panel["title"] == ROW
        elif inside:
            panels.append(panel)
    return panels


def _exported() -> set[str]:
    names = set()
    for metrics in (DispatcherMetrics, RelayMetrics, ProberMetrics):
        registry = CollectorRegistry()
        metrics(registry)
        for family in registry.collect():
            # A labelled metric has no samples until a label is used: name it by its type.
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",),
            }[family.type]
            names |= {family.name + suffix for suffix in suffixes}
    return names


@pytest.mark.unit
@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_multi_region_stacks_get_the_cross_region_row(stack: str) -> None:
    built = build_all(load_stack(DEFAULT_INFRA_DIR, stack))
    assert structure_problems(built) == []
    panels = _row_panels(built["im-pipeline"])
    titles = {p["title"] for p in panels}
    assert titles == {
        "Records skipped as foreign, and held",
        "Fencing refusals and seq gaps",
        "Relay deliveries by source region",
        "Replication lag (relay beacons)",
        "Cross-region delivery latency p99 by home region",
        "Shard map epoch",
        "Conflict prober: (conversation, seq) pairs naming two messages",
        "Conflict prober: age of the last run",
    }
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in (
        "im_dispatcher_foreign_records_total",
        "im_dispatcher_fencing_refusals_total",
        "im_dispatcher_seq_gaps_total",
        "im_dispatcher_held_records_total",
        "im_dispatcher_map_epoch",
        "im_relay_applied_total",
        "im_relay_replication_lag_seconds",
        "im_relay_delivery_latency_seconds_bucket",
        "im_prober_conflicts_total",
        "im_prober_last_run_timestamp_seconds",
    ):
        assert metric in exprs, metric
    prober = {
        t["expr"] for p in panels if p["title"].startswith("Conflict prober") for t in p["targets"]
    }
    relay = 'job="im-relay", region=~"$region"'
    assert prober == {
        f"sum(im_prober_conflicts_total{{{relay}}})",
        f"sum(increase(im_prober_conflicts_total{{{relay}}}[$__rate_interval]))",
        f"time() - max by (region) (im_prober_last_run_timestamp_seconds{{{relay}}})",
    }
    # Every series the row reads exists in the processes' registries.
    used = set(re.findall(r"\b(im_[a-z_]+)\{", exprs))
    assert used <= _exported(), used - _exported()
    # Relay panels select the relay job, which the chart's ServiceMonitor and the local
    # Prometheus both name im-relay.
    assert 'job="im-relay"' in exprs
    assert all(
        "$__rate_interval" in e.expr
        for e in expressions("im-pipeline", built["im-pipeline"])
        if "[" in e.expr
    )


@pytest.mark.unit
def test_a_one_region_stack_has_no_cross_region_row() -> None:
    built = build_all(load_stack(DEFAULT_INFRA_DIR, "local"))
    rows = [p["title"] for p in built["im-pipeline"]["panels"] if p["type"] == "row"]
    assert ROW not in rows


@pytest.mark.integration
def test_the_prober_panels_return_series_from_the_multi_region_stacks_prometheus(
    multi_region_stack: LocalStack,
) -> None:
    """The one-region stack's live lint never sees this row: its prober panels run against
    the staging stack's Prometheus, which scrapes every region's relay."""
    built = build_all(load_stack(DEFAULT_INFRA_DIR, "staging"))
    board = dict(built["im-pipeline"])
    panels = [p for p in _row_panels(board) if p["title"].startswith("Conflict prober")]
    assert len(panels) == 2
    board["panels"] = panels
    url = multi_region_stack.info.prometheus_url
    # increase() needs two samples of the relays in its window.
    wait_for(
        "the prober panels return series",
        lambda: live_problems({"im-pipeline": board}, url) == [],
        timeout=180,
        interval=2,
    )
    with Prometheus(url, timeout=5) as prometheus:
        ages = prometheus.query("time() - max by (region) (im_prober_last_run_timestamp_seconds)")
    assert {a["metric"]["region"] for a in ages} == {"eu-central", "us-east"}, ages
