"""`helm install` of the chart into the session's kwok cluster, `helm test`, and schema refusals.

Each test gets a fresh namespace that enforces the `restricted` Pod Security profile, so every
pod the chart creates also passes the API server's Pod Security admission.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    AutoscalingV2Api,
    BatchV1Api,
    CoreV1Api,
    CustomObjectsApi,
    DiscoveryV1Api,
    NetworkingV1Api,
    PolicyV1Api,
    V1ObjectMeta,
    V1Secret,
)

from tests.charts.helmkit import (
    RELEASE,
    Helm,
    component_name,
    live_pods,
    pod_census,
    pod_ready,
    scenario_file,
    selector,
    wait_rolled_out,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

KWOK_SIZING = Path(__file__).with_name("kwok-sizing-values.yaml")
# `helm list` shows only deployed and failed releases unless asked for each state.
EVERY_STATE = (
    "--deployed",
    "--failed",
    "--pending",
    "--superseded",
    "--uninstalled",
    "--uninstalling",
)


def create_jwks_secret(api: ApiClient, namespace: str) -> None:
    """The production values expect the RS256 key set in an existing Secret."""
    jwks = {"keys": [{"kty": "RSA", "kid": "test", "use": "sig", "n": "AQAB", "e": "AQAB"}]}
    CoreV1Api(api).create_namespaced_secret(
        namespace,
        V1Secret(
            metadata=V1ObjectMeta(name="im-gateway-jwks"),
            string_data={"jwks.json": json.dumps(jwks)},
        ),
    )


def assert_pods_running_and_ready(
    api: ApiClient, namespace: str, component: str, count: int
) -> list[Any]:
    pods = live_pods(api, namespace, component)
    assert len(pods) == count
    for pod in pods:
        assert pod.status.phase == "Running", pod.metadata.name
        assert pod_ready(pod), pod.metadata.name
        assert pod.spec.node_name, pod.metadata.name
    return pods


def zone_of(api: ApiClient, node_name: str) -> str:
    node = CoreV1Api(api).read_node(node_name)
    return str(node.metadata.labels["topology.kubernetes.io/zone"])


def ready_endpoints(api: ApiClient, namespace: str, service: str) -> int:
    slices = DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return sum(
        1
        for endpoint_slice in slices.items
        for endpoint in endpoint_slice.endpoints or []
        if endpoint.conditions and endpoint.conditions.ready
    )


def network_policy_names(api: ApiClient, namespace: str) -> set[str]:
    policies = NetworkingV1Api(api).list_namespaced_network_policy(namespace).items
    return {policy.metadata.name for policy in policies}


# -- install ---------------------------------------------------------------------------------


def test_minimal_install_rolls_out(
    cluster_helm: Helm, kube_api: ApiClient, restricted_namespace: str
) -> None:
    namespace = restricted_namespace
    cluster_helm.deploy("install", namespace, [scenario_file("minimal")])

    for component in ("gateway", "dispatcher"):
        wait_rolled_out(kube_api, namespace, component_name(component), replicas=1)
        assert_pods_running_and_ready(kube_api, namespace, component, 1)

    core = CoreV1Api(kube_api)
    gateway_service = core.read_namespaced_service(component_name("gateway"), namespace)
    assert gateway_service.spec.type == "ClusterIP"
    for component in ("gateway", "dispatcher"):
        metrics = core.read_namespaced_service(f"{component_name(component)}-metrics", namespace)
        assert metrics.spec.cluster_ip == "None"
    # The Services' selectors reach the pods: the endpoint controller lists them ready.
    wait_for(
        "gateway endpoints",
        lambda: ready_endpoints(kube_api, namespace, component_name("gateway")) == 1,
    )
    assert network_policy_names(kube_api, namespace) == {
        f"{RELEASE}-default-deny",
        component_name("gateway"),
        component_name("dispatcher"),
        component_name("test"),
        component_name("migrate"),  # the schema migration hook Job's egress
    }
    # The minimal scenario turns off the PDBs, HPA and ServiceMonitors.
    assert PolicyV1Api(kube_api).list_namespaced_pod_disruption_budget(namespace).items == []
    hpas = AutoscalingV2Api(kube_api).list_namespaced_horizontal_pod_autoscaler(namespace)
    assert hpas.items == []
    # Its HS256 key lives in a Secret the chart made, mounted read-only.
    secret = core.read_namespaced_secret(f"{RELEASE}-auth", namespace)
    assert set(secret.data) == {"hs256-secret"}

    status = json.loads(
        cluster_helm.run("status", RELEASE, "--namespace", namespace, "--output", "json").stdout
    )
    assert status["info"]["status"] == "deployed"


@pytest.mark.usefixtures("prometheus_operator_crds")
def test_production_install_scales_by_hpa_and_guards_with_pdbs(
    cluster_helm: Helm, kube_api: ApiClient, restricted_namespace: str
) -> None:
    namespace = restricted_namespace
    create_jwks_secret(kube_api, namespace)
    cluster_helm.deploy("install", namespace, [scenario_file("production"), KWOK_SIZING])

    # The Deployments leave replicas to their HPAs, which raise them to minReplicas.
    gateway = wait_rolled_out(
        kube_api, namespace, component_name("gateway"), replicas=4, timeout=120
    )
    wait_rolled_out(kube_api, namespace, component_name("dispatcher"), replicas=2, timeout=120)
    assert gateway.spec.template.spec.containers[0].image.endswith(":0.1.0")
    pods = assert_pods_running_and_ready(kube_api, namespace, "gateway", 4)
    assert_pods_running_and_ready(kube_api, namespace, "dispatcher", 2)
    # Hard anti-affinity: one gateway per node; hard zone spread: 2 + 2 over the two zones.
    nodes = [pod.spec.node_name for pod in pods]
    assert len(set(nodes)) == 4
    assert sorted(Counter(zone_of(kube_api, node) for node in nodes).values()) == [2, 2]

    autoscaling = AutoscalingV2Api(kube_api)
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler(
        component_name("gateway"), namespace
    )
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (4, 6)
    metrics = {
        (m.type, m.pods.metric.name if m.type == "Pods" else m.resource.name)
        for m in hpa.spec.metrics
    }
    assert metrics == {("Resource", "cpu"), ("Pods", "im_gateway_connections_active")}
    assert hpa.status.desired_replicas == 4
    able = {c.type: c for c in hpa.status.conditions or []}["AbleToScale"]
    assert able.status == "True"

    # The disruption controller has taken each PDB in and computes its budget.
    policy = PolicyV1Api(kube_api)
    for component, pods_expected in (("gateway", 4), ("dispatcher", 2)):

        def budget(name: str = component_name(component), expected: int = pods_expected) -> Any:
            pdb = policy.read_namespaced_pod_disruption_budget(name, namespace)
            status = pdb.status
            settled = (
                status is not None
                and status.observed_generation == pdb.metadata.generation
                and status.expected_pods == expected
                and status.current_healthy == expected
            )
            return pdb if settled else None

        pdb = wait_for(f"PDB {component} status", budget)
        assert pdb.spec.max_unavailable == 1
        assert pdb.status.desired_healthy == pods_expected - 1
        assert pdb.status.disruptions_allowed == 1

    core = CoreV1Api(kube_api)
    service = core.read_namespaced_service(component_name("gateway"), namespace)
    assert service.spec.type == "LoadBalancer"
    assert service.spec.external_traffic_policy == "Local"
    # The API server allocates the node health-check port only for Local LoadBalancers.
    assert service.spec.health_check_node_port
    wait_for(
        "gateway endpoints",
        lambda: ready_endpoints(kube_api, namespace, component_name("gateway")) == 4,
    )
    assert len(network_policy_names(kube_api, namespace)) == 5

    monitors = CustomObjectsApi(kube_api).list_namespaced_custom_object(
        "monitoring.coreos.com", "v1", namespace, "servicemonitors"
    )
    assert {m["metadata"]["name"] for m in monitors["items"]} == {
        component_name("gateway"),
        component_name("dispatcher"),
    }
    assert all(
        m["metadata"]["labels"]["release"] == "kube-prometheus-stack" for m in monitors["items"]
    )


# -- helm test -------------------------------------------------------------------------------


def test_helm_test_job_completes(
    cluster_helm: Helm, kube_api: ApiClient, restricted_namespace: str
) -> None:
    """kwok's pod-complete stage finishes Job-owned pods with exit code 0.

    So this proves the hook's plumbing (the Job is created, admitted under `restricted`,
    scheduled, completes, helm reads the result and deletes it), not the /readyz request the
    container would make: kwok runs no container.
    """
    namespace = restricted_namespace
    cluster_helm.deploy("install", namespace, [scenario_file("minimal")])
    with pod_census(kube_api, namespace, selector("test")) as census:
        result = cluster_helm.run("test", RELEASE, "--namespace", namespace, "--timeout", "120s")
    assert f"{RELEASE}-test-readyz" in result.stdout
    assert "Phase:          Succeeded" in result.stdout
    finished = [
        pod
        for pod in census.history
        if pod.status.phase == "Succeeded" and pod.metadata.owner_references[0].kind == "Job"
    ]
    assert finished, "no Job pod of the test hook reached Succeeded"
    terminated = finished[0].status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    # hook-delete-policy hook-succeeded: the Job is gone afterwards.
    jobs = BatchV1Api(kube_api).list_namespaced_job(namespace).items
    assert [job.metadata.name for job in jobs] == []


# -- schema refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ("gateway.image.tag=latest", "at '/gateway/image/tag': 'not' failed"),
        (
            "containerSecurityContext.privileged=true",
            "at '/containerSecurityContext/privileged': value must be false",
        ),
        ("gateway.surprise=1", "at '/gateway': additional properties 'surprise' not allowed"),
        ("gateway.replicas=0", "at '/gateway/replicas': minimum: got 0, want 1"),
    ],
)
def test_schema_violations_are_refused_and_nothing_is_installed(
    cluster_helm: Helm, kube_api: ApiClient, kube_namespace: str, override: str, complaint: str
) -> None:
    setting, _, value = override.partition("=")
    result = cluster_helm.deploy(
        "install", kube_namespace, [scenario_file("minimal")], {setting: value}, check=False
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr

    releases = json.loads(
        cluster_helm.run(
            "list", *EVERY_STATE, "--namespace", kube_namespace, "--output", "json"
        ).stdout
    )
    assert releases == []
    core = CoreV1Api(kube_api)
    assert AppsV1Api(kube_api).list_namespaced_deployment(kube_namespace).items == []
    assert core.list_namespaced_service(kube_namespace).items == []
    assert (
        core.list_namespaced_config_map(
            kube_namespace, label_selector="app.kubernetes.io/name=im-gateway"
        ).items
        == []
    )
    # Helm keeps release records in Secrets; none was written.
    assert core.list_namespaced_secret(kube_namespace, label_selector="owner=helm").items == []
