"""The pulumi-policy pack wraps the same policy functions the builder tests run."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from opsctl.spec import parse_spec
from opsctl.stack import build_stack
from tests.support import shipped_spec

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pack() -> Any:
    try:
        from infra.policy import pack
    except ModuleNotFoundError as missing:
        if missing.name != "pulumi_policy":
            raise
        pytest.fail("pulumi-policy is not installed; it is a project dependency (`make setup`)")
    return pack


def _resource(manifest: dict[str, Any]) -> Any:
    typ = f"kubernetes:{manifest['apiVersion']}:{manifest['kind']}"
    return SimpleNamespace(resource_type=typ, props=manifest)


def _stack_violations(pack: Any, manifests: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    args = SimpleNamespace(resources=[_resource(m) for m in manifests])
    for policy in pack.policies():
        if policy.name == "explicit-provider":
            continue
        reports: list[str] = []
        policy.validate(args, lambda message, urn=None, sink=reports: sink.append(message))
        found[policy.name] = reports
    return found


def test_pack_has_every_policy_mandatory(pack: Any) -> None:
    from pulumi_policy import EnforcementLevel

    policies = pack.policies()
    assert {p.name for p in policies} == {
        "requests-and-limits",
        "pdb",
        "zone-spread",
        "no-latest",
        "no-privileged",
        "explicit-provider",
    }
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in policies)


def test_stack_policies_pass_the_prod_plan_and_catch_a_breach(pack: Any) -> None:
    manifests = build_stack(parse_spec(shipped_spec("prod"))).regions[0].objects()
    assert all(reports == [] for reports in _stack_violations(pack, manifests).values())
    redis = next(m for m in manifests if m["kind"] == "RedisCluster")
    redis["spec"]["kubernetesConfig"]["image"] = "quay.io/opstree/redis:latest"
    assert len(_stack_violations(pack, manifests)["no-latest"]) == 1


def test_helm_releases_are_not_read_as_manifests(pack: Any) -> None:
    release = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
    assert pack.manifest_of("kubernetes:helm.sh/v3:Release", release) is None
    assert pack.manifest_of("kubernetes:core/v1:Namespace", release) == release


@pytest.mark.parametrize(
    ("provider", "violates"), [(None, True), ("default_4_34_2", True), ("ap-east-k8s", False)]
)
def test_explicit_provider_policy(pack: Any, provider: str | None, violates: bool) -> None:
    policy = next(p for p in pack.policies() if p.name == "explicit-provider")
    reports: list[str] = []
    args = SimpleNamespace(
        resource_type="kubernetes:core/v1:Namespace",
        provider=SimpleNamespace(name=provider) if provider else None,
    )
    policy.validate(args, lambda message, urn=None: reports.append(message))
    assert bool(reports) is violates
