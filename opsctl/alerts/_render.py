"""PrometheusRule custom resources per region, as kube-prometheus-stack selects them.

The namespace and labels come from ``opsctl.stack._names``: these are the very objects the
stack's monitoring component holds, whether Pulumi or ``opsctl alerts apply`` applies them.
"""

from __future__ import annotations

from typing import Any

from opsctl.alerts._rules import RuleSet
from opsctl.spec import Region, StackSpec
from opsctl.stack import _names as n

NAMESPACE = n.MONITORING_NAMESPACE  # where `opsctl alerts apply` applies them
COMPONENT = "monitoring"


def prometheus_rules(spec: StackSpec, region: Region, rules: RuleSet) -> list[dict[str, Any]]:
    objects = []
    for file, groups in sorted(rules.files.items()):
        stem = file.removesuffix(".yaml").replace("_", "-")
        meta = n.metadata(spec, region, COMPONENT, f"im-{stem}", n.MONITORING_NAMESPACE)
        meta["labels"].update(n.MONITORING_SELECTOR)
        objects.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": meta,
                "spec": {"groups": groups},
            }
        )
    return objects
