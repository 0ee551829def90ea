"""The policies of ``opsctl.stack.policies`` as pulumi-policy policies.

Stack policies see every Kubernetes object the engine will create (including our chart's,
which ``helm.v4.Chart`` expands into resources); Helm releases (``helm.v3.Release``) are opaque
to the engine and are covered by the unit tests on the builders instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from opsctl.stack.policies import MANIFEST_POLICIES, Violation, explicit_provider

_DESCRIPTIONS = {
    "requests-and-limits": "Every container sets cpu and memory requests and limits.",
    "pdb": "Every workload with more than one replica has a PodDisruptionBudget.",
    "zone-spread": "Every workload with more than one replica spreads across zones.",
    "no-latest": "Every image is pinned to a tag other than latest, or a digest.",
    "no-privileged": "No container runs privileged.",
}


def manifest_of(resource_type: str, props: Any) -> dict[str, Any] | None:
    """The Kubernetes object behind a pulumi-kubernetes resource's outputs, if it is one."""
    if not resource_type.startswith("kubernetes:") or resource_type.startswith("kubernetes:helm"):
        return None
    if not isinstance(props, dict) or "kind" not in props or "apiVersion" not in props:
        return None
    return dict(props)


def _stack_policy(
    name: str, check: Callable[[Sequence[dict[str, Any]]], list[Violation]]
) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        manifests = []
        for resource in args.resources:
            manifest = manifest_of(resource.resource_type, resource.props)
            if manifest is not None:
                manifests.append(manifest)
        for violation in check(manifests):
            report(str(violation), None)

    return StackValidationPolicy(
        name=name,
        description=_DESCRIPTIONS[name],
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def _validate_provider(args: ResourceValidationArgs, report: ReportViolation) -> None:
    name = args.provider.name if args.provider is not None else None
    problem = explicit_provider(args.resource_type, name)
    if problem:
        report(problem)


def policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    found: list[ResourceValidationPolicy | StackValidationPolicy] = [
        _stack_policy(name, check) for name, check in MANIFEST_POLICIES.items()
    ]
    found.append(
        ResourceValidationPolicy(
            name="explicit-provider",
            description="Every Kubernetes resource uses its region's explicit provider.",
            validate=_validate_provider,
            enforcement_level=EnforcementLevel.MANDATORY,
        )
    )
    return found
