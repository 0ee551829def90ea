"""The metrics each process exports are exactly the ones docs/protocol.md documents, with the
documented types and label names (dashboards, alerts and rollout analysis query them by name)."""

from __future__ import annotations

import re

import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import DispatcherMetrics, GatewayMetrics, ProberMetrics, RelayMetrics
from opsctl.paths import REPO_ROOT

pytestmark = pytest.mark.unit

ROW = re.compile(r"^\| (?P<names>`im_[^|]+) \| (?P<type>\w+) \|(?P<labels>[^|]*)\|")


def documented() -> dict[str, tuple[str, set[str]]]:
    """Metric name (without _total) -> (type, label names), from the tables in section 9."""
    out: dict[str, tuple[str, set[str]]] = {}
    for line in (REPO_ROOT / "docs" / "protocol.md").read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match is None:
            continue
        labels = set(re.findall(r"`([a-z_]+)`", match["labels"]))
        for name in re.findall(r"`(im_[a-z_]+)`", match["names"]):
            out[name.removesuffix("_total")] = (match["type"], labels)
    return out


def exported(metrics: object) -> dict[str, tuple[str, set[str]]]:
    """Every metric a process object registers, with its declared label names (the exposition
    shows labels only once a child exists)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name.removesuffix("_total")  # private: no public accessor
            out[name] = (value._type, set(value._labelnames))
    return out


@pytest.mark.parametrize(
    ("prefix", "metrics"),
    [
        ("im_gateway_", GatewayMetrics),
        ("im_dispatcher_", DispatcherMetrics),
        ("im_relay_", RelayMetrics),
        ("im_prober_", ProberMetrics),
    ],
)
def test_exported_metrics_match_the_documented_names_types_and_labels(
    prefix: str,
    metrics: type[GatewayMetrics | DispatcherMetrics | RelayMetrics | ProberMetrics],
) -> None:
    docs = {name: spec for name, spec in documented().items() if name.startswith(prefix)}
    assert docs, f"no {prefix} table in docs/protocol.md"
    process = metrics()
    assert exported(process) == docs
    # Every name in the exposition is one of them (nothing registered outside the object).
    families = {f.name for f in text_string_to_metric_families(process.render().decode())}
    assert {f.removesuffix("_created") for f in families} <= set(docs)
