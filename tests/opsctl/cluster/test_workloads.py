"""Workloads on a real simulated cluster behave as on a cloud cluster: kube-apiserver, etcd,
controller-manager and scheduler are the real binaries; kwok plays the kubelets."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from kubernetes.client import (
    AppsV1Api,
    AutoscalingV2Api,
    CoreV1Api,
    PolicyV1Api,
)

from opsctl.cluster import ZONE_LABEL
from opsctl.cluster.pytest_plugin import KubeCluster
from tests.support import wait_for

pytestmark = pytest.mark.integration


def deployment(name: str, image: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": name,
                            "image": image,
                            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}},
                        }
                    ],
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": ZONE_LABEL,
                            "whenUnsatisfiable": "DoNotSchedule",
                            "labelSelector": {"matchLabels": labels},
                        }
                    ],
                },
            },
        },
    }


def fully_available(apps: AppsV1Api, namespace: str, name: str, replicas: int) -> bool:
    status = apps.read_namespaced_deployment(name, namespace).status
    return (
        status is not None
        and status.available_replicas == replicas
        and status.updated_replicas == replicas
        and status.replicas == replicas
    )


def test_nodes_are_ready_in_every_zone(kube_cluster: KubeCluster) -> None:
    with kube_cluster.api_client() as client:
        nodes = CoreV1Api(client).list_node().items
    zones = Counter((node.metadata.labels or {}).get(ZONE_LABEL) for node in nodes)
    assert zones == dict.fromkeys(kube_cluster.plan.zones, 3)
    for node in nodes:
        assert node.status is not None
        conditions = {c.type: c.status for c in node.status.conditions or []}
        assert conditions.get("Ready") == "True", node.metadata
        assert node.status.allocatable is not None
        assert node.status.allocatable["cpu"] == "16"


def test_kubeconfig_context_is_the_spec_context(kube_cluster: KubeCluster) -> None:
    from kubernetes.config import new_client_from_config

    assert kube_cluster.context == "kwok-local"
    client = new_client_from_config(config_file=str(kube_cluster.kubeconfig), context="kwok-local")
    with client:
        assert CoreV1Api(client).list_namespace().items


def test_deployment_becomes_available_and_spreads_over_zones(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    with kube_cluster.api_client() as client:
        apps, core = AppsV1Api(client), CoreV1Api(client)
        apps.create_namespaced_deployment(kube_namespace, deployment("gw", "im/gateway:1", 3))
        wait_for("3/3 available", lambda: fully_available(apps, kube_namespace, "gw", 3))
        pods = core.list_namespaced_pod(kube_namespace, label_selector="app=gw").items
        assert len(pods) == 3
        for pod in pods:
            assert pod.status is not None
            assert pod.status.phase == "Running"
            ready = {c.type: c.status for c in pod.status.conditions or []}
            assert ready["Ready"] == "True"
            assert pod.status.pod_ip
        nodes = {pod.spec.node_name for pod in pods if pod.spec}
        zone_of = {
            node.metadata.name: (node.metadata.labels or {})[ZONE_LABEL]
            for node in core.list_node().items
            if node.metadata
        }
        # 3 pods over 2 zones with maxSkew 1: both zones get pods.
        assert {zone_of[node] for node in nodes if node} == set(kube_cluster.plan.zones)


def test_rolling_update_replaces_every_pod(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    with kube_cluster.api_client() as client:
        apps, core = AppsV1Api(client), CoreV1Api(client)
        apps.create_namespaced_deployment(kube_namespace, deployment("gw", "im/gateway:1", 3))
        wait_for("first rollout", lambda: fully_available(apps, kube_namespace, "gw", 3))
        patch = {
            "spec": {
                "template": {"spec": {"containers": [{"name": "gw", "image": "im/gateway:2"}]}}
            }
        }
        apps.patch_namespaced_deployment("gw", kube_namespace, patch)

        def rolled_out() -> bool:
            found = apps.read_namespaced_deployment("gw", kube_namespace)
            assert found.metadata is not None
            assert found.status is not None
            return (found.status.observed_generation or 0) >= (
                found.metadata.generation or 0
            ) and fully_available(apps, kube_namespace, "gw", 3)

        wait_for("second rollout", rolled_out)
        images = wait_for(
            "old pods gone",
            lambda: (
                (pods := core.list_namespaced_pod(kube_namespace, label_selector="app=gw").items)
                and len(pods) == 3
                and {p.spec.containers[0].image for p in pods if p.spec}
            ),
        )
        assert images == {"im/gateway:2"}
        replica_sets = apps.list_namespaced_replica_set(kube_namespace).items
        replicas = sorted(
            (rs.spec.template.spec.containers[0].image, rs.status.replicas) for rs in replica_sets
        )
        assert replicas == [("im/gateway:1", 0), ("im/gateway:2", 3)]


def test_pdb_tracks_healthy_pods(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    with kube_cluster.api_client() as client:
        apps, policy = AppsV1Api(client), PolicyV1Api(client)
        apps.create_namespaced_deployment(kube_namespace, deployment("gw", "im/gateway:1", 3))
        policy.create_namespaced_pod_disruption_budget(
            kube_namespace,
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "gw"},
                "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "gw"}}},
            },
        )

        def budget() -> tuple[int, int, int] | None:
            status = policy.read_namespaced_pod_disruption_budget("gw", kube_namespace).status
            if status is None or status.current_healthy != 3:
                return None
            return status.current_healthy, status.desired_healthy, status.disruptions_allowed

        # The disruption controller (in the real controller-manager) computes this.
        assert wait_for("PDB status", budget) == (3, 2, 1)


def test_hpa_is_accepted_and_enforces_min_replicas(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    with kube_cluster.api_client() as client:
        apps, autoscaling = AppsV1Api(client), AutoscalingV2Api(client)
        apps.create_namespaced_deployment(kube_namespace, deployment("gw", "im/gateway:1", 1))
        autoscaling.create_namespaced_horizontal_pod_autoscaler(
            kube_namespace,
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "gw"},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gw"},
                    "minReplicas": 2,
                    "maxReplicas": 4,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {"type": "Utilization", "averageUtilization": 70},
                            },
                        }
                    ],
                },
            },
        )
        stored = autoscaling.read_namespaced_horizontal_pod_autoscaler("gw", kube_namespace)
        assert stored.spec is not None
        assert (stored.spec.min_replicas, stored.spec.max_replicas) == (2, 4)
        # The HPA controller raises a deployment below minReplicas without needing metrics.
        wait_for(
            "HPA scale-up to minReplicas",
            lambda: fully_available(apps, kube_namespace, "gw", 2),
            timeout=90.0,
        )


def test_statefulset_pods_come_up_in_order(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    labels = {"app": "kv"}
    with kube_cluster.api_client() as client:
        apps, core = AppsV1Api(client), CoreV1Api(client)
        core.create_namespaced_service(
            kube_namespace,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kv"},
                "spec": {"clusterIP": "None", "selector": labels, "ports": [{"port": 6379}]},
            },
        )
        apps.create_namespaced_stateful_set(
            kube_namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "kv"},
                "spec": {
                    "serviceName": "kv",
                    "replicas": 3,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "kv", "image": "redis:7"}]},
                    },
                },
            },
        )

        def ready() -> bool:
            status = apps.read_namespaced_stateful_set("kv", kube_namespace).status
            return status is not None and status.ready_replicas == 3

        wait_for("3 ready stateful pods", ready)
        pods = core.list_namespaced_pod(kube_namespace, label_selector="app=kv").items
        assert sorted(p.metadata.name for p in pods if p.metadata) == ["kv-0", "kv-1", "kv-2"]
