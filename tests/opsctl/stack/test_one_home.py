"""Places that must agree do: every monitoring name is read from opsctl/stack/_names.py.

The PrometheusRules and dashboard ConfigMaps that `opsctl alerts|dashboards render|apply`
write are part of the stack (the Pulumi program applies the same rules), the chart's defaults
select the same Prometheus, and `opsctl status` asks the Prometheus the stack installs.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, Configuration

from opsctl import alerts, dashboards
from opsctl.paths import REPO_ROOT
from opsctl.spec import StackSpec, parse_spec
from opsctl.stack import _names as n
from opsctl.stack import build_stack, dashboard_configmaps
from opsctl.status._collect import proxy_prometheus
from tests.support import shipped_spec

pytestmark = pytest.mark.unit

CHART_VALUES = REPO_ROOT / "charts" / "im-gateway" / "values.yaml"


@pytest.fixture(scope="module")
def spec() -> StackSpec:
    return parse_spec(shipped_spec("staging"))


def _assert_stack_object(obj: dict[str, Any], spec: StackSpec, region_name: str) -> None:
    meta = obj["metadata"]
    assert meta["namespace"] == n.MONITORING_NAMESPACE, meta["name"]
    wanted = n.labels(spec, spec.region(region_name), "monitoring")
    assert meta["labels"] | wanted == meta["labels"], (meta["name"], meta["labels"])


def test_rendered_prometheus_rules_are_the_stacks_own(spec: StackSpec) -> None:
    rules = alerts.ruleset(spec)
    for plan in build_stack(spec).regions:
        rendered = alerts.prometheus_rules(spec, plan.region, rules)
        assert rendered
        for rule in rendered:
            _assert_stack_object(rule, spec, plan.region.name)
            assert rule["metadata"]["labels"] | n.MONITORING_SELECTOR == rule["metadata"]["labels"]
        # `opsctl alerts apply` and the Pulumi program apply the very same objects.
        in_plan = [o for o in plan.objects() if o["kind"] == "PrometheusRule"]
        assert in_plan == rendered


def test_rendered_dashboards_carry_the_stacks_labels_and_the_sidecars(spec: StackSpec) -> None:
    built = dashboards.build_all(spec)
    plan = build_stack(spec).regions[0]
    (release,) = [r for r in plan.releases() if r.name == n.MONITORING_RELEASE]
    sidecar = release.values["grafana"]["sidecar"]["dashboards"]
    selected = {sidecar["label"]: sidecar["labelValue"]}
    for region in spec.regions:
        stack_maps = dashboard_configmaps(spec, region, list(built.values()))
        for config_map in [*dashboards.configmaps(spec, region, built), *stack_maps]:
            _assert_stack_object(config_map, spec, region.name)
            labels = config_map["metadata"]["labels"]
            assert labels | selected == labels, config_map["metadata"]["name"]


def test_status_asks_the_prometheus_the_stack_installs(spec: StackSpec) -> None:
    plan = build_stack(spec).regions[0]
    (release,) = [r for r in plan.releases() if r.name == n.MONITORING_RELEASE]

    api_client = ApiClient(Configuration(host="https://api.example:6443"))
    with api_client, proxy_prometheus(api_client) as prometheus:
        assert prometheus.url == (
            f"https://api.example:6443/api/v1/namespaces/{release.namespace}/services/"
            f"{n.PROMETHEUS_SERVICE}:{n.PROMETHEUS_PORT}/proxy"
        )
    prometheus_spec = release.values["prometheus"]["prometheusSpec"]
    spread = prometheus_spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
    assert spread == n.PROMETHEUS_POD_LABELS


def test_the_charts_defaults_select_the_stacks_monitoring() -> None:
    values = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    for workload in ("gateway", "dispatcher"):
        assert values[workload]["serviceMonitor"]["labels"] == n.MONITORING_SELECTOR
    scraper = values["networkPolicy"]["prometheus"]
    namespace = scraper["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    assert namespace == n.MONITORING_NAMESPACE
    assert scraper["podSelector"]["matchLabels"] == n.PROMETHEUS_POD_LABELS
