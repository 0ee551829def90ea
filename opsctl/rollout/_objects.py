"""The Kubernetes bodies a rollout sends: pure functions, so tests can pin them exactly."""

from __future__ import annotations

import copy
from typing import Any

from opsctl.errors import CheckFailed

TRACK_LABEL = "im.platform/track"
ROLLOUT_ANNOTATION = "opsctl.io/rollout-id"
MANAGED_BY = {"app.kubernetes.io/managed-by": "opsctl-rollout"}


def container_index(deployment: dict[str, Any], name: str) -> int:
    """The container to update: the one named after the component, else the only one."""
    containers = deployment["spec"]["template"]["spec"].get("containers") or []
    for index, container in enumerate(containers):
        if container.get("name") == name:
            return index
    if len(containers) == 1:
        return 0
    names = ", ".join(str(c.get("name")) for c in containers)
    raise CheckFailed(f"deployment has no container '{name}' (containers: {names})")


def current_image(deployment: dict[str, Any], container: str) -> str:
    index = container_index(deployment, container)
    return str(deployment["spec"]["template"]["spec"]["containers"][index].get("image", ""))


def canary_deployment(
    stable: dict[str, Any], *, name: str, image: str, container: str, rollout_id: str
) -> dict[str, Any]:
    """A Deployment beside the stable one: same pod template and labels (so the same Service
    selects its pods) plus ``im.platform/track: canary``, which also keeps its selector apart.
    Starts at 0 replicas; each step scales it."""
    meta = stable["metadata"]
    template = copy.deepcopy(stable["spec"]["template"])
    template.setdefault("metadata", {})
    template["metadata"]["labels"] = {
        **template["metadata"].get("labels", {}),
        TRACK_LABEL: "canary",
    }
    template["spec"]["containers"][container_index(stable, container)]["image"] = image
    selector = copy.deepcopy(stable["spec"]["selector"])
    selector["matchLabels"] = {**selector.get("matchLabels", {}), TRACK_LABEL: "canary"}
    labels = {**(meta.get("labels") or {}), **MANAGED_BY, TRACK_LABEL: "canary"}
    spec: dict[str, Any] = {
        "replicas": 0,
        "selector": selector,
        "template": template,
        "revisionHistoryLimit": 1,
    }
    if "strategy" in stable["spec"]:
        spec["strategy"] = copy.deepcopy(stable["spec"]["strategy"])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {ROLLOUT_ANNOTATION: rollout_id},
        },
        "spec": spec,
    }


def scale_patch(replicas: int) -> dict[str, Any]:
    return {"spec": {"replicas": replicas}}


def promote_patch(
    container: str, image: str, rollout_id: str, rolling: dict[str, Any]
) -> dict[str, Any]:
    """Strategic merge: new image on the named container, budget-paced strategy."""
    return {
        "metadata": {"annotations": {ROLLOUT_ANNOTATION: rollout_id}},
        "spec": {
            **rolling,
            "template": {"spec": {"containers": [{"name": container, "image": image}]}},
        },
    }


def previous_state(deployment: dict[str, Any]) -> dict[str, Any]:
    """What a revert restores: the whole pod template, the strategy and minReadySeconds."""
    spec = deployment["spec"]
    return {
        "template": copy.deepcopy(spec["template"]),
        "strategy": copy.deepcopy(spec.get("strategy")),
        "minReadySeconds": spec.get("minReadySeconds", 0),
    }


def revert_patch(previous: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON patch replacing the template and strategy wholesale: an exact revert."""
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/spec/template", "value": previous["template"]},
        {"op": "add", "path": "/spec/minReadySeconds", "value": previous["minReadySeconds"]},
    ]
    if previous.get("strategy") is not None:
        ops.append({"op": "add", "path": "/spec/strategy", "value": previous["strategy"]})
    return ops


def restore_pacing_patch(previous: dict[str, Any]) -> list[dict[str, Any]]:
    """After a promotion, hand the Deployment back its own strategy (no pod restart)."""
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": "/spec/minReadySeconds", "value": previous["minReadySeconds"]}
    ]
    if previous.get("strategy") is not None:
        ops.append({"op": "add", "path": "/spec/strategy", "value": previous["strategy"]})
    return ops


def rollout_complete(deployment: dict[str, Any]) -> bool:
    """The Deployment controller has finished: every replica updated and available."""
    spec, status = deployment["spec"], deployment.get("status") or {}
    want = int(spec.get("replicas", 1))
    generation = int(deployment["metadata"].get("generation", 0))
    return (
        int(status.get("observedGeneration", 0)) >= generation
        and int(status.get("updatedReplicas", 0)) == want
        and int(status.get("availableReplicas", 0)) >= want
        and int(status.get("replicas", 0)) == want
    )


def ready_replicas(deployment: dict[str, Any]) -> int:
    return int((deployment.get("status") or {}).get("readyReplicas", 0))
