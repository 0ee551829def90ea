"""The policy functions, on the builders' output and on objects that break each rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from opsctl.spec import parse_spec
from opsctl.stack import build_stack
from opsctl.stack.policies import (
    MANIFEST_POLICIES,
    check_all,
    disruption_budgets,
    explicit_provider,
    no_privileged,
    pinned_images,
    requests_and_limits,
    zone_spread,
)
from tests.support import shipped_spec

pytestmark = pytest.mark.unit


def _deployment(replicas: int = 3, **container: Any) -> dict[str, Any]:
    labels = {"app": "web"}
    body = {
        "name": "web",
        "image": "registry.example/web:1.2.3",
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "128Mi"},
        },
        **container,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "im"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [body],
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "DoNotSchedule",
                            "labelSelector": {"matchLabels": labels},
                        }
                    ],
                },
            },
        },
    }


_PDB = {
    "apiVersion": "policy/v1",
    "kind": "PodDisruptionBudget",
    "metadata": {"name": "web", "namespace": "im"},
    "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
}


@pytest.mark.parametrize("stack", ["local", "staging", "prod"])
def test_builder_output_of_every_shipped_stack_complies(stack: str) -> None:
    plan = build_stack(parse_spec(shipped_spec(stack)))
    for region in plan.regions:
        assert check_all(region.objects()) == [], region.region.name


def test_a_compliant_deployment_passes_every_policy() -> None:
    assert check_all([_deployment(), _PDB]) == []


def test_missing_limits_are_reported() -> None:
    bad = _deployment(resources={"requests": {"cpu": "1", "memory": "1Gi"}})
    (violation,) = requests_and_limits([bad])
    assert "container 'web'" in violation.message
    assert violation.object == "Deployment/im/web"


def test_custom_resource_without_resources_is_reported() -> None:
    plan = build_stack(parse_spec(shipped_spec("prod"))).regions[0]
    pool = copy.deepcopy(next(o for o in plan.objects() if o["kind"] == "KafkaNodePool"))
    del pool["spec"]["resources"]
    (violation,) = requests_and_limits([pool])
    assert violation.message.startswith("spec.resources")


def test_replicated_workload_without_pdb_is_reported() -> None:
    (violation,) = disruption_budgets([_deployment()])
    assert violation.policy == "pdb"
    assert disruption_budgets([_deployment(replicas=1)]) == []


def test_hpa_minimum_counts_as_replicas() -> None:
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "im"},
        "spec": {"scaleTargetRef": {"name": "web"}, "minReplicas": 2, "maxReplicas": 4},
    }
    assert len(disruption_budgets([_deployment(replicas=1), hpa])) == 1


def test_redis_cluster_without_pdb_is_reported() -> None:
    plan = build_stack(parse_spec(shipped_spec("prod"))).regions[0]
    redis = copy.deepcopy(next(o for o in plan.objects() if o["kind"] == "RedisCluster"))
    redis["spec"]["redisFollower"]["pdb"]["enabled"] = False
    (violation,) = disruption_budgets([redis])
    assert "redisFollower" in violation.message


def test_missing_zone_spread_is_reported() -> None:
    bad = _deployment()
    bad["spec"]["template"]["spec"]["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
        }
    ]
    assert [v.policy for v in zone_spread([bad])] == ["zone-spread"]


def test_cassandra_racks_must_map_to_zones() -> None:
    plan = build_stack(parse_spec(shipped_spec("prod"))).regions[0]
    dc = copy.deepcopy(next(o for o in plan.objects() if o["kind"] == "CassandraDatacenter"))
    dc["spec"]["racks"] = [{"name": "r1"}]
    assert len(zone_spread([dc])) == 1


@pytest.mark.parametrize(
    "image", ["registry.example/web", "registry.example/web:latest", "localhost:5000/web"]
)
def test_unpinned_images_are_reported(image: str) -> None:
    (violation,) = pinned_images([_deployment(image=image)])
    assert image in violation.message


def test_digest_and_registry_port_are_pinned() -> None:
    digest = "registry.example:5000/web@sha256:" + "a" * 64
    assert pinned_images([_deployment(image=digest)]) == []
    assert pinned_images([_deployment(image="registry.example:5000/web:1.0")]) == []


def test_privileged_containers_are_reported() -> None:
    bad = _deployment(securityContext={"privileged": True})
    (violation,) = no_privileged([bad])
    assert "privileged" in violation.message
    added = _deployment(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}})
    assert len(no_privileged([added])) == 1


def test_explicit_provider() -> None:
    assert explicit_provider("kubernetes:core/v1:Namespace", "ap-east-k8s") is None
    assert "default provider" in (
        explicit_provider("kubernetes:core/v1:Namespace", "default_4_34_2") or ""
    )
    assert "no provider" in (explicit_provider("kubernetes:core/v1:Namespace", None) or "")
    assert explicit_provider("imstack:region:Region", None) is None


def test_every_policy_is_registered() -> None:
    assert set(MANIFEST_POLICIES) == {
        "requests-and-limits",
        "pdb",
        "zone-spread",
        "no-latest",
        "no-privileged",
    }
