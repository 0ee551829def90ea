"""kube-prometheus-stack, our alert rules (opsctl.alerts) and Grafana dashboards."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opsctl.errors import UserInputError
from opsctl.spec import Region, StackSpec
from opsctl.stack import _names as n
from opsctl.stack._k8s import pvc_template, resources, zone_spread
from opsctl.stack._model import Component, HelmRelease, Manifest
from opsctl.stack._names import small
from opsctl.stack._versions import KUBE_PROMETHEUS_STACK

if TYPE_CHECKING:
    # opsctl.alerts reads its namespace and labels from _names, so it is imported where used.
    from opsctl.alerts import RuleSet

# kube-prometheus-stack's Grafana sidecar loads ConfigMaps carrying this label.
DASHBOARD_LABEL = n.GRAFANA_DASHBOARD_LABEL
_NAME = re.compile(r"[^a-z0-9-]+")


def _retention_size(storage: str) -> str:
    # Leave 15% of the volume free so Prometheus can compact; TSDB wants GB/MB units.
    from opsctl.spec import parse_storage

    return f"{max(1, int(parse_storage(storage) * 0.85 / 2**20))}MB"


def _release(spec: StackSpec, region: Region) -> HelmRelease:
    from opsctl.alerts import alertmanager_config

    monitoring = region.monitoring
    replicas = 1 if small(region) else 2
    secrets = sorted({r.secret_ref for r in spec.alerting.receivers if r.secret_ref})
    prom_labels = dict(n.PROMETHEUS_POD_LABELS)
    am_labels = {"app.kubernetes.io/name": "alertmanager"}
    values: dict[str, Any] = {
        "crds": {"enabled": True},
        "commonLabels": {n.REGION_LABEL: region.name},
        "prometheus": {
            "prometheusSpec": {
                "replicas": replicas,
                "retention": monitoring.retention,
                "retentionSize": _retention_size(monitoring.storage),
                "externalLabels": {"region": region.name, "environment": spec.environment},
                "resources": resources("200m", "1Gi", "2", "2Gi")
                if small(region)
                else resources("2", "16Gi", "4", "16Gi"),
                "storageSpec": {"volumeClaimTemplate": pvc_template(monitoring.storage)},
                "topologySpreadConstraints": zone_spread(prom_labels),
                # Pick up our ServiceMonitors and rules by label, not by Helm release.
                "ruleSelectorNilUsesHelmValues": False,
                "serviceMonitorSelectorNilUsesHelmValues": False,
            },
            "podDisruptionBudget": {"enabled": replicas > 1, "maxUnavailable": 1},
        },
        "alertmanager": {
            "config": alertmanager_config(spec),
            "alertmanagerSpec": {
                "replicas": replicas,
                "secrets": secrets,
                "resources": resources("50m", "128Mi", "500m", "256Mi"),
                "topologySpreadConstraints": zone_spread(am_labels),
            },
            "podDisruptionBudget": {"enabled": replicas > 1, "maxUnavailable": 1},
        },
        "grafana": {
            # The admin login from a Secret; kube-prometheus-stack's default password is
            # cleared too, so the chart could only ever generate a random one.
            "adminPassword": "",
            "admin": {
                "existingSecret": n.GRAFANA_ADMIN_SECRET,
                "userKey": n.GRAFANA_ADMIN_USER_KEY,
                "passwordKey": n.GRAFANA_ADMIN_PASSWORD_KEY,
            },
            "resources": resources("100m", "256Mi", "1", "512Mi"),
            "sidecar": {
                "dashboards": {
                    "enabled": True,
                    "label": n.GRAFANA_DASHBOARD_LABEL,
                    "labelValue": n.GRAFANA_DASHBOARD_LABEL_VALUE,
                }
            },
        },
        "prometheusOperator": {"resources": resources("100m", "128Mi", "500m", "512Mi")},
        "kube-state-metrics": {"resources": resources("50m", "128Mi", "500m", "256Mi")},
        "prometheus-node-exporter": {"resources": resources("50m", "64Mi", "250m", "128Mi")},
    }
    return HelmRelease(
        name=n.MONITORING_RELEASE,
        namespace=n.MONITORING_NAMESPACE,
        chart=KUBE_PROMETHEUS_STACK.chart,
        repo=KUBE_PROMETHEUS_STACK.repo,
        version=KUBE_PROMETHEUS_STACK.version,
        values=values,
    )


def dashboard_configmaps(
    spec: StackSpec, region: Region, dashboards: Sequence[dict[str, Any]]
) -> list[Manifest]:
    """The builder hook for dashboards: one ConfigMap per Grafana dashboard JSON document.

    Each dashboard needs a ``uid`` (its ConfigMap is named after it, so renames don't leak
    orphans). The Grafana sidecar imports every ConfigMap carrying ``grafana_dashboard=1``.
    """
    maps = []
    seen: set[str] = set()
    for index, dashboard in enumerate(dashboards):
        uid = dashboard.get("uid")
        if not isinstance(uid, str) or not uid:
            raise UserInputError(f"dashboard #{index} ({dashboard.get('title', '?')}): no 'uid'")
        name = "im-dashboard-" + _NAME.sub("-", uid.lower()).strip("-")
        if name in seen:
            raise UserInputError(f"dashboard #{index}: uid '{uid}' is used twice")
        seen.add(name)
        meta = n.metadata(spec, region, "monitoring", name[:63], n.MONITORING_NAMESPACE)
        meta["labels"][n.GRAFANA_DASHBOARD_LABEL] = n.GRAFANA_DASHBOARD_LABEL_VALUE
        maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta,
                "data": {f"{name}.json": json.dumps(dashboard, indent=2, sort_keys=True)},
            }
        )
    return maps


def build(
    spec: StackSpec, region: Region, rules: RuleSet, dashboards: Sequence[dict[str, Any]]
) -> Component:
    from opsctl.alerts import prometheus_rules

    objects = prometheus_rules(spec, region, rules)  # labelled and namespaced from _names
    objects += dashboard_configmaps(spec, region, dashboards)
    return Component(
        name="monitoring",
        type_name="Monitoring",
        releases=(_release(spec, region),),
        objects=tuple(objects),
        depends_on=("platform",),
    )
