"""Every ci scenario's rendered objects, validated by the real API server of the pinned version.

Server-side apply with dryRun=All and strict field validation: the API server checks each object
against its OpenAPI schema (built-in kinds from the pinned Kubernetes, ServiceMonitor from the
upstream Prometheus Operator CRD) and runs admission, without storing anything. The pods the
workloads would create are also dry-run created in a namespace that enforces the `restricted`
Pod Security profile.
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, AppsV1Api, VersionApi

from opsctl.cluster.crds import crd_set
from tests.charts.helmkit import (
    SCENARIOS,
    Helm,
    component_name,
    find,
    kube_version,
    pod_from_template,
    scenario_file,
    server_dry_run,
)

pytestmark = pytest.mark.integration

# Values beyond the ci scenarios whose templates branch differently.
EDGE_CASES: dict[str, dict[str, str]] = {
    "no-prestop-pause": {"gateway.preStopSleepSeconds": "0"},
    "digest-and-hard-anti-affinity": {
        "gateway.image.digest": "sha256:" + "a" * 64,
        "gateway.podAntiAffinity": "hard",
    },
    "external-service-account": {"serviceAccount.create": "false", "serviceAccount.name": "im"},
    "no-policies-no-tests": {"networkPolicy.enabled": "false", "tests.enabled": "false"},
    "nodeport-and-ingress-without-tls": {
        "gateway.service.type": "NodePort",
        "gateway.ingress.enabled": "true",
    },
}


def render(helm: Helm, case: str, namespace: str) -> list[dict[str, Any]]:
    if case == "defaults":
        return helm.render(namespace=namespace)
    if case in SCENARIOS:
        return helm.render(values=[scenario_file(case)], namespace=namespace)
    minimal = [scenario_file("minimal")]
    return helm.render(values=minimal, sets=EDGE_CASES[case], namespace=namespace)


def report(outcomes: list[Any]) -> str:
    return "\n".join(
        f"{o.kind}/{o.name}: {o.status} {o.message}" for o in outcomes if not o.accepted
    )


def test_cluster_runs_the_pinned_kubernetes(kube_api: ApiClient) -> None:
    assert VersionApi(kube_api).get_code().git_version == kube_version()


@pytest.mark.usefixtures("prometheus_operator_crds")
@pytest.mark.parametrize("case", ["defaults", *SCENARIOS, *EDGE_CASES])
def test_rendered_objects_pass_server_side_validation(
    helm: Helm, kube_api: ApiClient, restricted_namespace: str, case: str
) -> None:
    objects = render(helm, case, restricted_namespace)
    outcomes = server_dry_run(kube_api, objects, restricted_namespace)
    assert report(outcomes) == ""
    assert len(outcomes) == len(objects)

    pods = [pod_from_template(obj) for obj in objects if obj["kind"] in ("Deployment", "Job")]
    pod_outcomes = server_dry_run(kube_api, pods, restricted_namespace)
    assert report(pod_outcomes) == ""

    # Nothing was stored: the namespace holds none of the rendered objects.
    assert AppsV1Api(kube_api).list_namespaced_deployment(restricted_namespace).items == []


@pytest.mark.usefixtures("prometheus_operator_crds")
def test_production_renders_every_kind_the_issue_asks_for(helm: Helm) -> None:
    kinds = Counter(obj["kind"] for obj in helm.render(values=[scenario_file("production")]))
    assert kinds == {
        "Deployment": 2,
        "PodDisruptionBudget": 2,
        "HorizontalPodAutoscaler": 2,
        "Service": 3,
        "ServiceMonitor": 2,
        "NetworkPolicy": 5,  # default deny, gateway, dispatcher, helm test, migration
        "ServiceAccount": 1,
        "ConfigMap": 1,
        "Job": 2,  # the helm test and the schema migration (a hook)
    }


# -- the validation really validates ---------------------------------------------------------


@pytest.fixture(scope="module")
def production(helm: Helm) -> list[dict[str, Any]]:
    return helm.render(values=[scenario_file("production")])


def test_server_rejects_an_unknown_field_and_a_wrong_type(
    kube_api: ApiClient, kube_namespace: str, production: list[dict[str, Any]]
) -> None:
    deployment = copy.deepcopy(find(production, "Deployment", component_name("gateway")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")  # a typo the schema must catch
    [outcome] = server_dry_run(kube_api, [deployment], kube_namespace)
    assert not outcome.accepted
    assert "readinesProbe" in outcome.message

    deployment = copy.deepcopy(find(production, "Deployment", component_name("gateway")))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "fifty"
    [outcome] = server_dry_run(kube_api, [deployment], kube_namespace)
    assert not outcome.accepted
    assert "terminationGracePeriodSeconds" in outcome.message


@pytest.mark.usefixtures("prometheus_operator_crds")
def test_server_checks_service_monitors_against_the_upstream_crd(
    kube_api: ApiClient, kube_namespace: str, production: list[dict[str, Any]]
) -> None:
    monitor = copy.deepcopy(find(production, "ServiceMonitor", component_name("gateway")))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    [outcome] = server_dry_run(kube_api, [monitor], kube_namespace)
    assert not outcome.accepted
    assert outcome.status == 422
    assert "spec.endpoints[0].interval" in outcome.message


def test_restricted_pod_security_refuses_a_loosened_pod(
    kube_api: ApiClient, restricted_namespace: str, production: list[dict[str, Any]]
) -> None:
    pod = pod_from_template(find(production, "Deployment", component_name("gateway")))
    del pod["spec"]["securityContext"]["seccompProfile"]
    del pod["spec"]["containers"][0]["securityContext"]["capabilities"]
    [outcome] = server_dry_run(kube_api, [pod], restricted_namespace)
    assert not outcome.accepted
    assert "restricted" in outcome.message
    assert "seccompProfile" in outcome.message
    assert "capabilities.drop" in outcome.message


def test_crd_files_come_from_the_pinned_upstream_release(
    prometheus_operator_crds: list[str],
) -> None:
    crds = crd_set("prometheus-operator")
    assert "servicemonitors.monitoring.coreos.com" in prometheus_operator_crds
    stamp = (crds.directory / ".complete").read_text()
    assert f"github.com/prometheus-operator/prometheus-operator@{crds.version}" in stamp
    assert all(isinstance(path, Path) and path.parent == crds.directory for path in crds.files)
