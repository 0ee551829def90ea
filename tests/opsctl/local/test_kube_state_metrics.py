"""kube-state-metrics against a real simulated cluster, scraped by the local Prometheus: the
series the Kubernetes rules use appear for IM workloads, and the rules' selectors match them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from opsctl.cluster.pytest_plugin import KubeCluster
from opsctl.local import LocalStack
from tests.alerts.kube_workloads import REPLICAS, im_workloads
from tests.support import wait_for

pytestmark = pytest.mark.integration


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def test_kube_state_metrics_runs_only_with_a_cluster(
    local_stack_with_cluster: LocalStack, kube_cluster: KubeCluster
) -> None:
    stack = local_stack_with_cluster
    assert stack.config.kubeconfig == kube_cluster.kubeconfig
    row = next(row for row in stack.status() if row.name == "kube-state-metrics")
    assert row.healthy, row
    assert "kube-state-metrics" in stack.info.metrics_urls
    targets_url = f"{stack.info.prometheus_url}/api/v1/targets"

    def ksm_up() -> bool:
        targets = httpx.get(targets_url, timeout=10).json()["data"]["activeTargets"]
        return any(
            t["labels"]["job"] == "kube-state-metrics" and t["health"] == "up" for t in targets
        )

    wait_for("the kube-state-metrics target to be up", ksm_up, timeout=30)


def test_workload_series_reach_prometheus_with_the_rules_names(
    local_stack_with_cluster: LocalStack, kube_cluster: KubeCluster
) -> None:
    prometheus = local_stack_with_cluster.info.prometheus_url
    with im_workloads(kube_cluster) as namespace:
        ns = f'namespace="{namespace}"'
        crash = wait_for(
            "the crash loop in kube_pod_container_status_waiting_reason",
            lambda: _query(
                prometheus,
                f'kube_pod_container_status_waiting_reason{{{ns}, reason="CrashLoopBackOff"}}',
            ),
            timeout=90,
        )
        assert crash[0]["metric"]["container"] == "dispatcher"
        assert float(crash[0]["value"][1]) == 1
        max_replicas = wait_for(
            "kube_horizontalpodautoscaler_spec_max_replicas",
            lambda: _query(prometheus, f"kube_horizontalpodautoscaler_spec_max_replicas{{{ns}}}"),
        )
        assert float(max_replicas[0]["value"][1]) == REPLICAS
        assert max_replicas[0]["metric"]["horizontalpodautoscaler"] == "gateway"
        wait_for(
            "kube_horizontalpodautoscaler_status_current_replicas",
            lambda: _query(
                prometheus, f"kube_horizontalpodautoscaler_status_current_replicas{{{ns}}}"
            ),
        )
        pdb = wait_for(
            "kube_poddisruptionbudget_status_pod_disruptions_allowed",
            lambda: _query(
                prometheus, f"kube_poddisruptionbudget_status_pod_disruptions_allowed{{{ns}}}"
            ),
        )
        assert pdb[0]["metric"]["poddisruptionbudget"] == "gateway"
        assert float(pdb[0]["value"][1]) == 0  # minAvailable = replicas
        # The rules' own selectors (namespace=~"im.*") find these workloads.
        blocking = _query(
            prometheus,
            'kube_poddisruptionbudget_status_pod_disruptions_allowed{namespace=~"im.*"} == 0',
        )
        assert namespace in {item["metric"]["namespace"] for item in blocking}
        crash_rule = (
            "max by (namespace, pod, container) (kube_pod_container_status_waiting_reason"
            '{reason="CrashLoopBackOff", namespace=~"im.*"}) == 1'
        )
        assert namespace in {item["metric"]["namespace"] for item in _query(prometheus, crash_rule)}
