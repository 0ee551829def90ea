"""infra/rbac/opsctl-rollout.yaml on the session's kwok cluster (real RBAC and admission): the
rollout identity can change the chart's gateway and dispatcher Deployments, their canaries and
its state ConfigMaps, and nothing else in the namespace. (That the shipped Role is enough for a
whole `opsctl rollout` is tests/opsctl/rollout/test_rbac_cluster.py.)"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    Configuration,
    CoreV1Api,
    V1ConfigMap,
    V1ObjectMeta,
)
from kubernetes.client.exceptions import ApiException

from opsctl.cluster import find_tools
from opsctl.paths import REPO_ROOT
from tests.support import wait_for

if TYPE_CHECKING:
    from opsctl.cluster.pytest_plugin import KubeCluster

pytestmark = pytest.mark.integration
MANIFEST = REPO_ROOT / "infra" / "rbac" / "opsctl-rollout.yaml"
OURS = ("im-gateway-gateway", "im-gateway-dispatcher")


def _deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        },
    }


@pytest.fixture
def rollout_client(kube_cluster: KubeCluster, kube_namespace: str) -> Iterator[ApiClient]:
    """The namespace with the manifest applied and the chart-named Deployments plus an unrelated
    one (as admin); a client authenticated as the opsctl-rollout ServiceAccount."""
    kubectl = find_tools(("kubectl",))["kubectl"]
    subprocess.run(
        [
            str(kubectl),
            "--kubeconfig",
            str(kube_cluster.kubeconfig),
            "--context",
            kube_cluster.context,
            "-n",
            kube_namespace,
            "apply",
            "-f",
            str(MANIFEST),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with kube_cluster.api_client() as admin:
        apps = AppsV1Api(admin)
        for name in (*OURS, "unrelated"):
            apps.create_namespaced_deployment(kube_namespace, _deployment(name))
        token = (
            CoreV1Api(admin)
            .create_namespaced_service_account_token(
                "opsctl-rollout", kube_namespace, {"spec": {"expirationSeconds": 3600}}
            )
            .status.token
        )
        host = admin.configuration.host
        ca = admin.configuration.ssl_ca_cert
    config = Configuration()
    config.host = host
    config.ssl_ca_cert = ca
    config.api_key = {"authorization": f"Bearer {token}"}
    with ApiClient(config) as client:
        yield client


def _forbidden(call: Any) -> str:
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status in (403, 422), refused.value
    return str(refused.value.body)


def _policy_enforced(apps: AppsV1Api, namespace: str) -> None:
    """A new policy takes a moment to reach the admission chain: wait until it refuses."""
    patch = {"metadata": {"annotations": {"probe": "policy"}}}

    def refused() -> bool:
        try:
            apps.patch_namespaced_deployment("unrelated", namespace, patch)
        except ApiException as error:
            return error.status in (403, 422)
        return False

    wait_for("the admission policy to refuse an unrelated Deployment", refused, timeout=60)


def test_the_manifest_ends_with_the_policy_and_its_binding() -> None:
    kinds = [d["kind"] for d in yaml.safe_load_all(MANIFEST.read_text())]
    assert kinds == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]


def test_rollout_identity_changes_only_the_charts_deployments(
    rollout_client: ApiClient, kube_namespace: str
) -> None:
    apps = AppsV1Api(rollout_client)
    _policy_enforced(apps, kube_namespace)
    patch = {"spec": {"template": {"metadata": {"annotations": {"touched": "yes"}}}}}
    # Its own: patch the stable ones; create, scale and delete a canary.
    for name in OURS:
        apps.patch_namespaced_deployment(name, kube_namespace, patch)
    apps.create_namespaced_deployment(kube_namespace, _deployment("im-gateway-gateway-canary"))
    apps.patch_namespaced_deployment(
        "im-gateway-gateway-canary", kube_namespace, {"spec": {"replicas": 1}}
    )
    apps.delete_namespaced_deployment("im-gateway-gateway-canary", kube_namespace)
    # Anything else: refused, though the Role's verbs are namespace-wide.
    body = _forbidden(lambda: apps.patch_namespaced_deployment("unrelated", kube_namespace, patch))
    assert "opsctl rollout may only change" in body
    _forbidden(lambda: apps.delete_namespaced_deployment("unrelated", kube_namespace))
    _forbidden(lambda: apps.create_namespaced_deployment(kube_namespace, _deployment("miner")))
    _forbidden(
        lambda: apps.create_namespaced_deployment(
            kube_namespace, _deployment("im-gateway-gateway-canary-2")
        )
    )


def test_rollout_identity_writes_only_its_state_configmaps(
    rollout_client: ApiClient, kube_namespace: str
) -> None:
    _policy_enforced(AppsV1Api(rollout_client), kube_namespace)
    core = CoreV1Api(rollout_client)

    def create(name: str) -> Any:
        return core.create_namespaced_config_map(
            kube_namespace, V1ConfigMap(metadata=V1ObjectMeta(name=name), data={"a": "b"})
        )

    create("opsctl-rollout-gateway")
    core.patch_namespaced_config_map("opsctl-rollout-gateway", kube_namespace, {"data": {"a": "c"}})
    body = _forbidden(lambda: create("anything-else"))
    assert "state ConfigMaps" in body
