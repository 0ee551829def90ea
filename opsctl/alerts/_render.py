"""PrometheusRule custom resources per region, as kube-prometheus-stack selects them."""

from __future__ import annotations

from typing import Any

from opsctl.alerts._rules import RuleSet
from opsctl.spec import Region, StackSpec

NAMESPACE = "monitoring"
# kube-prometheus-stack's default ruleSelector matches the release label.
SELECTOR_LABELS = {"release": "kube-prometheus-stack"}


def prometheus_rules(spec: StackSpec, region: Region, rules: RuleSet) -> list[dict[str, Any]]:
    objects = []
    for file, groups in sorted(rules.files.items()):
        stem = file.removesuffix(".yaml").replace("_", "-")
        objects.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {
                    "name": f"im-{stem}",
                    "namespace": NAMESPACE,
                    "labels": {
                        **SELECTOR_LABELS,
                        "app.kubernetes.io/part-of": "im-platform",
                        "app.kubernetes.io/managed-by": "opsctl",
                        "im.platform/region": region.name,
                        "im.platform/environment": spec.environment,
                    },
                },
                "spec": {"groups": groups},
            }
        )
    return objects
