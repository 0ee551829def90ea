"""The PromQL-ish metric name scanner: names, never labels, functions or keywords."""

from __future__ import annotations

import pytest

from opsctl.alerts import ruleset
from opsctl.alerts._metrics import metric_names, rule_metrics, unknown_metrics
from opsctl.alerts._rules import RuleSet
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="cassandra"} == 0', {"up"}),
        (
            "sum by (instance) (rate(cassandra_droppedmessage_dropped_total"
            '{scope="MUTATION"}[5m])) > 0',
            {"cassandra_droppedmessage_dropped_total"},
        ),
        (
            "sum(rate(im_gateway_auth_failures_total[5m])) > 5 * clamp_min(sum(rate("
            "im_gateway_auth_failures_total[1h] offset 1h)), 0.1) and sum(x_total[5m:1m]) > 1",
            {"im_gateway_auth_failures_total", "x_total"},
        ),
        (
            "redis_memory_used_bytes / (redis_memory_max_bytes > 0) > 0.9",
            {"redis_memory_used_bytes", "redis_memory_max_bytes"},
        ),
        (
            "a / on (instance) group_left (node, zone) b unless ignoring(x) c",
            {"a", "b", "c"},
        ),
        ("sum(rate(a[5m])) by (le, pod) or vector(1e-9) * 2.5e3", {"a"}),
        (
            '{__name__="weird_metric", job="x"} + label_replace(m, "d", "$1", "s", "(.*)")',
            {"weird_metric", "m"},
        ),
        (
            "im:slo_errors:ratio_rate5m > (14.4 * 0.001) and im:slo_events:increase5m > 20",
            {"im:slo_errors:ratio_rate5m", "im:slo_events:increase5m"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m]))) # a comment sum",
            {"h_bucket"},
        ),
        ('count_values("v", build_info) > bool 1 + sum without(a)(b)', {"build_info", "b"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_shipped_rule_references_at_least_one_metric() -> None:
    rules = ruleset(load_stack(DEFAULT_INFRA_DIR, "local"))
    entries = rule_metrics(rules)
    assert len(entries) > 30
    for entry in entries:
        assert entry.metrics, entry
        # Label names and functions never leak in as metric names.
        assert not entry.metrics & {"instance", "job", "rate", "sum", "scope", "reason", "by"}


def test_an_unknown_metric_names_the_file_the_rule_and_the_metric() -> None:
    rules = RuleSet(
        files={
            "x.yaml": [
                {
                    "name": "g",
                    "rules": [
                        {"record": "r:a:rate5m", "expr": "rate(a_total[5m])"},
                        {"alert": "Bad", "expr": "r:a:rate5m > 1 and missing_metric > 0"},
                    ],
                }
            ]
        }
    )
    assert unknown_metrics(rules, {"a_total"}) == [
        "x.yaml: alert Bad: metric missing_metric is not exposed"
    ]
    assert unknown_metrics(rules, {"a_total", "missing_metric"}) == []
