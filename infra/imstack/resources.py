"""One Kubernetes manifest -> one Pulumi resource of the right type."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from opsctl.stack import Manifest

# Built-in kinds get their typed resource (type token kubernetes:<group>/<version>:<Kind>);
# everything else is a CustomResource of its CRD.
_TYPED: dict[tuple[str, str], Any] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ResourceQuota"): k8s.core.v1.ResourceQuota,
    ("v1", "LimitRange"): k8s.core.v1.LimitRange,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("batch/v1", "Job"): k8s.batch.v1.Job,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
}
_FIELDS = {"metadata": "metadata", "spec": "spec", "data": "data", "stringData": "string_data"}


def resource_name(region: str, manifest: Manifest) -> str:
    meta = manifest["metadata"]
    namespace = meta.get("namespace", "_")
    return f"{region}/{manifest['kind'].lower()}/{namespace}/{meta['name']}"


def create(region: str, manifest: Manifest, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    key = (manifest["apiVersion"], manifest["kind"])
    name = resource_name(region, manifest)
    typed = _TYPED.get(key)
    if typed is None:
        return k8s.apiextensions.CustomResource(
            name,
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=manifest["metadata"],
            spec=manifest.get("spec"),
            opts=opts,
        )
    unknown = set(manifest) - set(_FIELDS) - {"apiVersion", "kind"}
    if unknown:
        raise ValueError(f"{name}: fields {sorted(unknown)} are not mapped to Pulumi inputs")
    args = {_FIELDS[key_]: value for key_, value in manifest.items() if key_ in _FIELDS}
    resource: pulumi.CustomResource = typed(name, opts=opts, **args)
    return resource
