"""Every metric any alert or recording rule uses (alerts/rules/*.yaml plus the SLO rules
generated from the local stack spec) is exposed by the live local stack, with kube-state-metrics
watching a simulated cluster that runs IM workloads. A miss names the file, the rule and the
metric."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from opsctl.alerts import ruleset
from opsctl.alerts._metrics import exposed_metrics, rule_metrics, unknown_metrics
from opsctl.alerts._rules import RuleSet
from opsctl.cluster.pytest_plugin import KubeCluster
from opsctl.local import LocalStack
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.poll import WaitTimeout, wait_until
from opsctl.prometheus import Prometheus, PrometheusRejected
from opsctl.spec import load_stack
from tests.alerts.kube_workloads import im_workloads

pytestmark = pytest.mark.integration

SETTLE_S = 90  # JVM agents, kube-state-metrics' first lists and the first scrapes
# Series the IM processes export themselves (docs/protocol.md), as opposed to the exporters'.
IM_PREFIXES = ("im_gateway_", "im_dispatcher_")
# The relay and its conflict prober run only in a multi-region stack (this one has one region):
# tests/alerts/test_multi_region_metrics.py checks their rules on the staging stack.
MULTI_REGION_PREFIXES = ("im_relay_", "im_prober_")


def _is_im(problem: str) -> bool:
    return any(f"metric {prefix}" in problem for prefix in IM_PREFIXES)


def _is_multi_region(problem: str) -> bool:
    return any(f"metric {prefix}" in problem for prefix in MULTI_REGION_PREFIXES)


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    loaded = ruleset(load_stack(DEFAULT_INFRA_DIR, "local"))
    expected = {"slo.yaml", "kafka.yaml", "cassandra.yaml", "redis.yaml", "kubernetes.yaml"}
    assert expected <= set(loaded.files)
    return loaded


@pytest.fixture(scope="module")
def live(
    local_stack_with_cluster: LocalStack, kube_cluster: KubeCluster, rules: RuleSet
) -> Iterator[str]:
    """The live stack's Prometheus URL, once IM workloads run on the cluster and every
    exporter's series have had time to appear."""
    prometheus = local_stack_with_cluster.info.prometheus_url

    def settled() -> bool:
        missing = unknown_metrics(rules, exposed_metrics(prometheus))
        return not [p for p in missing if not _is_im(p) and not _is_multi_region(p)]

    with im_workloads(kube_cluster):
        # Not settling is no error here: the tests below name whatever is still missing.
        with contextlib.suppress(WaitTimeout):
            wait_until("the exporters' series", settled, timeout=SETTLE_S, interval=2)
        yield prometheus


def test_every_rule_uses_only_metrics_the_exporters_expose(live: str, rules: RuleSet) -> None:
    """Kafka, Cassandra, Redis, kube-state-metrics and Prometheus' own `up`."""
    problems = [
        p
        for p in unknown_metrics(rules, exposed_metrics(live))
        if not _is_im(p) and not _is_multi_region(p)
    ]
    assert not problems, "rules use metrics the live local stack does not expose:\n  " + (
        "\n  ".join(problems)
    )
    used = set().union(*(entry.metrics for entry in rule_metrics(rules)))
    assert "kube_poddisruptionbudget_status_pod_disruptions_allowed" in used
    assert "cassandra_clientrequest_latency_seconds" in used
    assert "redis_master_link_up" in used


def test_every_rule_uses_only_metrics_the_im_processes_expose(live: str, rules: RuleSet) -> None:
    problems = [p for p in unknown_metrics(rules, exposed_metrics(live)) if not _is_multi_region(p)]
    assert not problems, "rules use metrics the live local stack does not expose:\n  " + (
        "\n  ".join(problems)
    )


def test_a_rule_with_an_unknown_metric_is_named(live: str) -> None:
    typo = 'sum(rate(redis_evicted_keyz_total{job="redis"}[5m])) > 0'
    entries = [{"alert": "RedisFine", "expr": "redis_up == 0"}, {"alert": "Typo", "expr": typo}]
    bogus = RuleSet(files={"bogus.yaml": [{"name": "im-bogus", "rules": entries}]})
    assert unknown_metrics(bogus, exposed_metrics(live)) == [
        "bogus.yaml: alert Typo: metric redis_evicted_keyz_total is not exposed"
    ]


def test_every_rule_expression_runs_on_the_live_prometheus(live: str, rules: RuleSet) -> None:
    """Alert and recording expressions parse and evaluate on the real server (not just promtool)."""
    failures = []
    with Prometheus(live) as prometheus:
        for rule in rules.rules():
            try:
                prometheus.query(str(rule.body["expr"]))
            except PrometheusRejected as refused:
                failures.append(f"{rule.file}: {rule.where}: {refused.reason}")
    assert failures == []
