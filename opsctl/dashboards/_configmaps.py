"""Dashboards as ConfigMaps that the Grafana sidecar of kube-prometheus-stack loads.

The namespace and labels come from ``opsctl.stack._names``, like every object of the stack.
"""

from __future__ import annotations

import json
from typing import Any

from opsctl.spec import Region, StackSpec
from opsctl.stack import _names as n

NAMESPACE = n.MONITORING_NAMESPACE  # where `opsctl dashboards apply` applies them
COMPONENT = "monitoring"
SIDECAR_LABEL = {n.GRAFANA_DASHBOARD_LABEL: n.GRAFANA_DASHBOARD_LABEL_VALUE}
FOLDER = "IM platform"


def configmaps(
    spec: StackSpec, region: Region, dashboards: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    maps = []
    for uid, document in sorted(dashboards.items()):
        meta = n.metadata(spec, region, COMPONENT, f"dashboard-{uid}", n.MONITORING_NAMESPACE)
        meta["labels"].update(SIDECAR_LABEL)
        meta["annotations"] = {"grafana_folder": FOLDER}
        maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta,
                "data": {f"{uid}.json": json.dumps(document, sort_keys=True)},
            }
        )
    return maps
