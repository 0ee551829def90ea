"""`helm upgrade` rollouts on the kwok cluster: surge bounds, checksum-driven restarts, no-ops.

A watch on the gateway pods records the pod counts after every change the API server reports,
so a transient peak or dip during the rollout cannot slip between two polls. Pods are counted
the way the Deployment controller counts them: terminating pods are neither live nor available.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api

from tests.charts.helmkit import (
    Helm,
    component_name,
    counts_as_live,
    live_pods,
    pod_census,
    pod_ready,
    scenario_file,
    selector,
    wait_rolled_out,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

REPLICAS = 4
NEW_TAG = "0.2.0"


def helm_apply(helm: Helm, verb: str, namespace: str, sets: dict[str, str]) -> None:
    helm.deploy(verb, namespace, [scenario_file("minimal")], sets)


def settled(api: ApiClient, namespace: str, component: str, count: int) -> list[Any] | None:
    """The live pods once exactly ``count`` remain and all are ready (old ones gone)."""
    pods = CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector(component)).items
    if len(pods) != count or not all(counts_as_live(p) and pod_ready(p) for p in pods):
        return None
    return pods


@pytest.mark.parametrize(
    ("max_surge", "max_unavailable"),
    [("25%", "0"), ("2", "1")],
    ids=["surge-25pct-none-unavailable", "surge-2-one-unavailable"],
)
def test_image_upgrade_rolls_within_the_configured_surge(
    cluster_helm: Helm,
    kube_api: ApiClient,
    restricted_namespace: str,
    max_surge: str,
    max_unavailable: str,
) -> None:
    namespace = restricted_namespace
    gateway = component_name("gateway")
    sets = {
        "gateway.replicas": str(REPLICAS),
        "gateway.strategy.maxSurge": max_surge,
        "gateway.strategy.maxUnavailable": max_unavailable,
        # The surge bounds are under test here, not the pacing (test_im_gateway_strategy.py).
        "gateway.strategy.minReadySeconds": "0",
    }
    helm_apply(cluster_helm, "install", namespace, sets)
    wait_rolled_out(kube_api, namespace, gateway, replicas=REPLICAS)
    old_uids = {pod.metadata.uid for pod in live_pods(kube_api, namespace, "gateway")}
    assert len(old_uids) == REPLICAS

    # Kubernetes rounds a percentage surge up and a percentage unavailability down.
    surge = _absolute(max_surge, REPLICAS, math.ceil)
    unavailable = _absolute(max_unavailable, REPLICAS, math.floor)

    with pod_census(kube_api, namespace, selector("gateway")) as census:
        helm_apply(cluster_helm, "upgrade", namespace, {**sets, "gateway.image.tag": NEW_TAG})
        wait_rolled_out(kube_api, namespace, gateway, replicas=REPLICAS)
        final = wait_for(
            "old gateway pods to go", lambda: settled(kube_api, namespace, "gateway", REPLICAS)
        )

    assert census.max_live <= REPLICAS + surge, census.samples
    assert census.min_available >= REPLICAS - unavailable, census.samples
    # The surge was used, not just allowed: the rollout went above the replica count.
    assert census.max_live > REPLICAS, census.samples
    if unavailable == 0:
        # One new pod at a time, never a pod short.
        assert census.max_live == REPLICAS + surge
        assert census.min_available == REPLICAS
    images = {pod.spec.containers[0].image for pod in final}
    assert images == {f"registry.im.internal/im/gateway:{NEW_TAG}"}
    assert not old_uids & {pod.metadata.uid for pod in final}


def _absolute(value: str, replicas: int, rounding: Any) -> int:
    if value.endswith("%"):
        return int(rounding(replicas * int(value[:-1]) / 100))
    return int(value)


def test_config_change_rolls_the_gateway_and_a_noop_upgrade_does_not(
    cluster_helm: Helm, kube_api: ApiClient, restricted_namespace: str
) -> None:
    namespace = restricted_namespace
    gateway = component_name("gateway")
    sets = {"gateway.replicas": "2"}
    helm_apply(cluster_helm, "install", namespace, sets)
    wait_rolled_out(kube_api, namespace, gateway, replicas=2)
    apps = AppsV1Api(kube_api)
    before = apps.read_namespaced_deployment(gateway, namespace)
    gateway_pods = {p.metadata.uid for p in live_pods(kube_api, namespace, "gateway")}
    dispatcher_pods = {p.metadata.uid for p in live_pods(kube_api, namespace, "dispatcher")}

    # Same values again: helm makes a new revision but the pod template is unchanged.
    helm_apply(cluster_helm, "upgrade", namespace, sets)
    same = apps.read_namespaced_deployment(gateway, namespace)
    assert same.metadata.generation == before.metadata.generation
    assert {p.metadata.uid for p in live_pods(kube_api, namespace, "gateway")} == gateway_pods
    assert len(replica_sets(kube_api, namespace, "gateway")) == 1

    # Only a gateway limit changes; it reaches the pods through the ConfigMap, and the checksum
    # annotation of that ConfigMap is what rolls them.
    with pod_census(kube_api, namespace, selector("gateway")) as census:
        helm_apply(
            cluster_helm, "upgrade", namespace, {**sets, "gateway.limits.rateLimitPerSecond": "75"}
        )
        wait_rolled_out(kube_api, namespace, gateway, replicas=2)
        final = wait_for(
            "old gateway pods to go", lambda: settled(kube_api, namespace, "gateway", 2)
        )
    after = apps.read_namespaced_deployment(gateway, namespace)
    old_annotations = before.spec.template.metadata.annotations
    new_annotations = after.spec.template.metadata.annotations
    assert new_annotations["checksum/config"] != old_annotations["checksum/config"]
    assert new_annotations["checksum/auth"] == old_annotations["checksum/auth"]
    assert after.spec.template.spec == before.spec.template.spec  # nothing else moved
    assert not gateway_pods & {p.metadata.uid for p in final}
    assert len(replica_sets(kube_api, namespace, "gateway")) == 2
    config = CoreV1Api(kube_api).read_namespaced_config_map(gateway, namespace)
    assert config.data["IMGW_RATE_LIMIT_PER_S"] == "75"
    # 25% surge of 2 replicas is 1 pod; the default allows none unavailable.
    assert census.max_live == 3, census.samples
    assert census.min_available == 2, census.samples
    # The dispatcher does not read the gateway's ConfigMap: its pods stay.
    assert {p.metadata.uid for p in live_pods(kube_api, namespace, "dispatcher")} == dispatcher_pods


def replica_sets(api: ApiClient, namespace: str, component: str) -> list[Any]:
    return (
        AppsV1Api(api)
        .list_namespaced_replica_set(namespace, label_selector=selector(component))
        .items
    )
