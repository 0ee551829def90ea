"""Simulated multi-region Kubernetes: one kwok cluster per stack region, on pinned binaries.

This package root stays light (no Kubernetes client); the process side lives in
``opsctl.cluster.kwok`` and the test fixtures in ``opsctl.cluster.pytest_plugin``.
"""

from opsctl.cluster._plan import (
    NODES_PER_ZONE,
    STACK_FOR_REGION_COUNT,
    ZONE_LABEL,
    ClusterPlan,
    NodeShape,
    cluster_name,
    node_manifests,
    plan_clusters,
    resolve_stack,
)
from opsctl.cluster._tools import CLUSTER_TOOLS, Toolset, find_tools

__all__ = [
    "CLUSTER_TOOLS",
    "NODES_PER_ZONE",
    "STACK_FOR_REGION_COUNT",
    "ZONE_LABEL",
    "ClusterPlan",
    "NodeShape",
    "Toolset",
    "cluster_name",
    "find_tools",
    "node_manifests",
    "plan_clusters",
    "resolve_stack",
]
