"""Which simulated clusters to run and what goes in them: pure logic, no processes.

One kwok cluster per region of a stack. Its kubeconfig context is the region's ``kubeContext``
from the stack spec, so everything that reads the spec (Pulumi, rollouts, checks) reaches the
simulated cluster without translation.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsctl.errors import UserInputError
from opsctl.spec import load_stack

# `--regions N` picks the shipped stack that has N regions.
STACK_FOR_REGION_COUNT: dict[int, str] = {1: "local", 2: "staging", 3: "prod"}

NODES_PER_ZONE = 3
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
MANAGED_BY_LABEL = "opsctl.io/managed-by"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"

_CLUSTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class ClusterPlan:
    """One simulated cluster: the region it stands for and how it is reached."""

    name: str  # kwokctl cluster name, also the directory under the state dir
    stack: str
    region: str
    context: str  # the region's kubeContext in the stack spec
    zones: tuple[str, ...]


@dataclass(frozen=True)
class NodeShape:
    """Capacity of every fake node; a mid-size cloud VM so scheduling looks realistic."""

    cpu: str = "16"
    memory: str = "64Gi"
    pods: str = "110"
    ephemeral_storage: str = "200Gi"
    instance_type: str = "kwok.standard-16"


def cluster_name(context: str) -> str:
    """kwokctl names its own context ``kwok-<name>``; strip that prefix so names stay short.

    Contexts are unique across stacks (kwok-staging-eu-central vs prod-eu-central), so the
    names are too.
    """
    name = context.removeprefix("kwok-")
    if not _CLUSTER_NAME.match(name):
        raise UserInputError(
            f"kubeContext '{context}' cannot name a simulated cluster: '{name}' must be a DNS "
            "label (lowercase letters, digits and '-', at most 63)",
            hint="rename the region's kubeContext in the stack spec",
        )
    return name


def resolve_stack(stack: str, regions: int | None, *, stack_from_flag: bool) -> str:
    """The stack whose regions to run: ``--regions N`` maps to the stack with N regions."""
    if regions is None:
        return stack
    if stack_from_flag:
        raise UserInputError("give either --stack or --regions, not both")
    try:
        return STACK_FOR_REGION_COUNT[regions]
    except KeyError:
        known = ", ".join(
            f"{count} ({name})" for count, name in sorted(STACK_FOR_REGION_COUNT.items())
        )
        raise UserInputError(f"--regions {regions} is not supported; use one of: {known}") from None


def plan_clusters(infra_dir: Path, stack: str) -> list[ClusterPlan]:
    """One cluster per region of the stack spec (validated by opsctl.spec)."""
    spec = load_stack(infra_dir, stack)
    plans = [
        ClusterPlan(
            name=cluster_name(region.kube_context),
            stack=stack,
            region=region.name,
            context=region.kube_context,
            zones=tuple(region.zones),
        )
        for region in spec.regions
    ]
    names = [plan.name for plan in plans]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserInputError(
            f"stack '{stack}': regions share kubeContext-derived cluster names: "
            + ", ".join(duplicates)
        )
    return plans


def node_name(zone: str, index: int) -> str:
    """Zones are unique within a cluster, so zone and index name a node."""
    return f"kwok-{zone}-{index}"


def node_manifests(
    plan: ClusterPlan, *, per_zone: int = NODES_PER_ZONE, shape: NodeShape | None = None
) -> list[dict[str, Any]]:
    """Fake nodes for kwok to animate: ``per_zone`` in every zone of the region.

    kwok's node stages mark them Ready and keep their heartbeats; the scheduler spreads pods
    over them by the zone label exactly as on a cloud cluster.
    """
    if per_zone < 1:
        raise UserInputError(f"nodes per zone must be at least 1, got {per_zone}")
    shape = shape or NodeShape()
    resources = {
        "cpu": shape.cpu,
        "memory": shape.memory,
        "pods": shape.pods,
        "ephemeral-storage": shape.ephemeral_storage,
    }
    manifests: list[dict[str, Any]] = []
    for zone in plan.zones:
        for index in range(per_zone):
            name = node_name(zone, index)
            # Stable per cluster and node, so re-creating a node keeps its identity.
            machine_id = uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.{plan.name}.kwok")
            manifests.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {
                            FAKE_NODE_ANNOTATION: "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                        "labels": {
                            "kubernetes.io/arch": "amd64",
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/hostname": name,
                            "node.kubernetes.io/instance-type": shape.instance_type,
                            "type": "kwok",
                            MANAGED_BY_LABEL: "opsctl",
                            REGION_LABEL: plan.region,
                            ZONE_LABEL: zone,
                        },
                    },
                    "status": {
                        "allocatable": dict(resources),
                        "capacity": dict(resources),
                        "nodeInfo": {
                            "architecture": "amd64",
                            "operatingSystem": "linux",
                            "osImage": "kwok simulated node",
                            "kernelVersion": "kwok",
                            "containerRuntimeVersion": "kwok://fake",
                            "kubeletVersion": "fake",
                            "kubeProxyVersion": "fake",
                            "bootID": "",
                            "machineID": machine_id.hex,
                            "systemUUID": str(machine_id),
                        },
                    },
                }
            )
    return manifests
