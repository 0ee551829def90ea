"""IM-like workloads on the simulated cluster, so kube-state-metrics has what the Kubernetes
rules select on: a Deployment with an HPA pinned at its maximum, a PDB allowing no disruption,
and a crash-looping container, in a namespace matching the rules' namespace=~"im.*"."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opsctl.cluster.pytest_plugin import TEST_RUN_LABEL, KubeCluster
from tests.support import wait_for

REPLICAS = 2
CPU_AT_70_PERCENT = {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}


def _deployment(name: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "im-gateway", "app.kubernetes.io/component": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": name,
                            "image": "registry.im.internal/im/gateway:0.1.0",
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ]
                },
            },
        },
    }


@contextmanager
def im_workloads(cluster: KubeCluster) -> Iterator[str]:
    """Create the workloads in a fresh ``im-*`` namespace; yields its name, deletes it after."""
    from kubernetes.client import AppsV1Api, AutoscalingV2Api, CoreV1Api, PolicyV1Api

    run_id = uuid.uuid4().hex[:8]
    namespace = f"im-metrics-{run_id}"
    name = "gateway"
    with cluster.api_client() as client:
        core = CoreV1Api(client)
        core.create_namespace({"metadata": {"name": namespace, "labels": {TEST_RUN_LABEL: run_id}}})
        try:
            wait_for(
                "the default service account",
                lambda: any(
                    sa.metadata.name == "default"
                    for sa in core.list_namespaced_service_account(namespace).items
                ),
            )
            AppsV1Api(client).create_namespaced_deployment(namespace, _deployment(name))
            AutoscalingV2Api(client).create_namespaced_horizontal_pod_autoscaler(
                namespace,
                {
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": name},
                    "spec": {
                        "scaleTargetRef": {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": name,
                        },
                        "minReplicas": 1,
                        "maxReplicas": REPLICAS,  # already at its maximum
                        "metrics": [{"type": "Resource", "resource": CPU_AT_70_PERCENT}],
                    },
                },
            )
            PolicyV1Api(client).create_namespaced_pod_disruption_budget(
                namespace,
                {
                    "apiVersion": "policy/v1",
                    "kind": "PodDisruptionBudget",
                    "metadata": {"name": name},
                    "spec": {
                        "minAvailable": REPLICAS,  # every pod needed: no disruption allowed
                        "selector": {"matchLabels": {"app.kubernetes.io/component": name}},
                    },
                },
            )
            _crash_looping_pod(core, namespace)
            yield namespace
        finally:
            core.delete_namespace(namespace, propagation_policy="Background")


def _crash_looping_pod(core: Any, namespace: str) -> None:
    """kwok plays the kubelet and runs every container; a crash loop is written into the pod's
    status once kwok is done with it (it leaves pods with an IP alone)."""
    node = core.list_node().items[0].metadata.name
    pod = "dispatcher-crashing"
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": pod, "labels": {"app.kubernetes.io/component": "dispatcher"}},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "dispatcher", "image": "registry.im.internal/im/x:0"}],
            },
        },
    )
    started = wait_for(
        "kwok to start the pod", lambda: core.read_namespaced_pod(pod, namespace).status.pod_ip
    )
    assert started
    status = core.read_namespaced_pod_status(pod, namespace).status
    core.patch_namespaced_pod_status(
        pod,
        namespace,
        {
            "status": {
                "containerStatuses": [
                    {
                        "name": "dispatcher",
                        "image": "registry.im.internal/im/x:0",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 7,
                        "started": False,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                        "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                    }
                ],
                "podIP": status.pod_ip,
            }
        },
    )
