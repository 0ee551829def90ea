"""Pinned versions of every chart and image the stack installs: the one place to bump them.

``crd_project`` names the project in ``opsctl.cluster.crds.CRD_SOURCES`` whose upstream CRDs
(fetched by scripts/setup/crds.sh from a package registry) validate the custom resources we
build; its pin in tools/go/versions.env must equal the chart's ``app_version`` (a unit test checks).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChartPin:
    chart: str
    repo: str
    version: str
    app_version: str
    crd_project: str  # a key of opsctl.cluster.crds.CRD_SOURCES


CERT_MANAGER = ChartPin(
    chart="cert-manager",
    repo="https://charts.jetstack.io",
    version="v1.21.2",
    app_version="v1.21.2",
    crd_project="cert-manager",
)
STRIMZI = ChartPin(
    chart="strimzi-kafka-operator",
    repo="https://strimzi.io/charts/",
    version="0.51.0",
    app_version="0.51.0",
    crd_project="strimzi",
)
CASS_OPERATOR = ChartPin(
    chart="cass-operator",
    repo="https://helm.k8ssandra.io/stable",
    version="0.64.0",
    app_version="v1.30.0",
    crd_project="cass-operator",
)
REDIS_OPERATOR = ChartPin(
    chart="redis-operator",
    repo="https://ot-container-kit.github.io/helm-charts/",
    version="0.23.0",
    app_version="v0.23.0",
    crd_project="redis-operator",
)
KUBE_PROMETHEUS_STACK = ChartPin(
    chart="kube-prometheus-stack",
    repo="https://prometheus-community.github.io/helm-charts",
    version="83.0.0",
    app_version="v0.90.1",
    crd_project="prometheus-operator",
)

CHART_PINS: tuple[ChartPin, ...] = (
    CERT_MANAGER,
    STRIMZI,
    CASS_OPERATOR,
    REDIS_OPERATOR,
    KUBE_PROMETHEUS_STACK,
)

# Images we name ourselves (the operators pick their own, pinned by the chart version).
CASSANDRA_SERVER_VERSION = "5.0.4"
CASSANDRA_TOOLS_IMAGE = "docker.io/library/cassandra:5.0.4"  # cqlsh for the keyspace Job
REDIS_IMAGE = "quay.io/opstree/redis:v7.0.15"
REDIS_EXPORTER_IMAGE = "quay.io/opstree/redis-exporter:v1.44.0"
