"""Dashboards as ConfigMaps that the Grafana sidecar of kube-prometheus-stack loads."""

from __future__ import annotations

import json
from typing import Any

from opsctl.spec import Region, StackSpec

NAMESPACE = "monitoring"
SIDECAR_LABEL = {"grafana_dashboard": "1"}


def configmaps(
    spec: StackSpec, region: Region, dashboards: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"dashboard-{uid}",
                "namespace": NAMESPACE,
                "labels": {
                    **SIDECAR_LABEL,
                    "app.kubernetes.io/part-of": "im-platform",
                    "app.kubernetes.io/managed-by": "opsctl",
                    "im.platform/region": region.name,
                    "im.platform/environment": spec.environment,
                },
                "annotations": {"grafana_folder": "IM platform"},
            },
            "data": {f"{uid}.json": json.dumps(document, sort_keys=True)},
        }
        for uid, document in sorted(dashboards.items())
    ]
