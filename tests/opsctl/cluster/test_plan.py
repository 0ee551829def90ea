"""Pure logic: which clusters a stack or --regions asks for, and the fake nodes they get."""

from __future__ import annotations

from collections import Counter

import pytest
from kubernetes.client import V1Node

from opsctl.cluster import (
    ZONE_LABEL,
    ClusterPlan,
    NodeShape,
    cluster_name,
    node_manifests,
    plan_clusters,
    resolve_stack,
)
from opsctl.errors import ExitCode, UserInputError
from opsctl.paths import DEFAULT_INFRA_DIR

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("regions", "stack"), [(1, "local"), (2, "staging"), (3, "prod")])
def test_regions_count_picks_the_stack_with_that_many_regions(regions: int, stack: str) -> None:
    assert resolve_stack("local", regions, stack_from_flag=False) == stack
    assert len(plan_clusters(DEFAULT_INFRA_DIR, stack)) == regions


def test_without_regions_the_resolved_stack_is_used() -> None:
    assert resolve_stack("staging", None, stack_from_flag=True) == "staging"


@pytest.mark.parametrize("regions", [0, 4, -1])
def test_unsupported_region_counts_are_bad_input(regions: int) -> None:
    with pytest.raises(UserInputError, match=r"--regions .* use one of: 1 \(local\)") as raised:
        resolve_stack("local", regions, stack_from_flag=False)
    assert raised.value.exit_code == ExitCode.BAD_INPUT


def test_stack_and_regions_together_are_bad_input() -> None:
    with pytest.raises(UserInputError, match="either --stack or --regions"):
        resolve_stack("prod", 3, stack_from_flag=True)


def test_local_stack_plans_one_cluster_with_the_spec_context() -> None:
    (plan,) = plan_clusters(DEFAULT_INFRA_DIR, "local")
    assert plan == ClusterPlan(
        name="local",
        stack="local",
        region="local",
        context="kwok-local",
        zones=("zone-a", "zone-b"),
    )


def test_staging_contexts_match_the_spec() -> None:
    plans = plan_clusters(DEFAULT_INFRA_DIR, "staging")
    assert [(p.name, p.context, p.region) for p in plans] == [
        ("staging-eu-central", "kwok-staging-eu-central", "eu-central"),
        ("staging-us-east", "kwok-staging-us-east", "us-east"),
    ]
    assert plans[0].zones == ("eu-central-1a", "eu-central-1b", "eu-central-1c")


def test_prod_clusters_use_the_prod_context_names() -> None:
    plans = plan_clusters(DEFAULT_INFRA_DIR, "prod")
    assert [p.context for p in plans] == ["prod-ap-east", "prod-eu-central", "prod-us-east"]
    assert [p.name for p in plans] == ["prod-ap-east", "prod-eu-central", "prod-us-east"]


def test_unknown_stack_is_bad_input() -> None:
    with pytest.raises(UserInputError, match="stack 'nope' not found"):
        plan_clusters(DEFAULT_INFRA_DIR, "nope")


@pytest.mark.parametrize("context", ["kwok-Local", "kwok-", "a_b", "x" * 64])
def test_contexts_that_cannot_name_a_cluster_are_rejected(context: str) -> None:
    with pytest.raises(UserInputError, match="cannot name a simulated cluster"):
        cluster_name(context)


def _plan(zones: tuple[str, ...] = ("zone-a", "zone-b")) -> ClusterPlan:
    return ClusterPlan(
        name="local", stack="local", region="local", context="kwok-local", zones=zones
    )


def test_nodes_per_zone_with_zone_labels() -> None:
    manifests = node_manifests(_plan(("a", "b", "c")), per_zone=3)
    zones = Counter(m["metadata"]["labels"][ZONE_LABEL] for m in manifests)
    assert zones == {"a": 3, "b": 3, "c": 3}
    names = [m["metadata"]["name"] for m in manifests]
    assert len(set(names)) == 9
    assert names[:3] == ["kwok-a-0", "kwok-a-1", "kwok-a-2"]
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == manifest["metadata"]["name"]
        assert labels["topology.kubernetes.io/region"] == "local"
        assert manifest["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"


def test_node_capacity_is_realistic_and_valid_for_the_api() -> None:
    shape = NodeShape(cpu="8", memory="32Gi", pods="58")
    manifest = node_manifests(_plan(), per_zone=1, shape=shape)[0]
    assert manifest["status"]["capacity"] == manifest["status"]["allocatable"]
    assert manifest["status"]["capacity"]["cpu"] == "8"
    assert manifest["status"]["capacity"]["memory"] == "32Gi"
    assert manifest["status"]["capacity"]["pods"] == "58"
    node = V1Node.model_validate(manifest)  # the client model rejects incomplete nodeInfo
    assert node.status is not None
    assert node.status.node_info is not None


def test_node_identity_is_stable_across_calls() -> None:
    first = node_manifests(_plan(), per_zone=2)
    assert first == node_manifests(_plan(), per_zone=2)
    ids = {m["status"]["nodeInfo"]["systemUUID"] for m in first}
    assert len(ids) == 4


def test_zero_nodes_per_zone_is_bad_input() -> None:
    with pytest.raises(UserInputError, match="at least 1"):
        node_manifests(_plan(), per_zone=0)
