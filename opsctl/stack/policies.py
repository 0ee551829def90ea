"""The stack's policies as pure functions over Kubernetes manifests (plain dicts).

The pulumi-policy pack (infra/policy/) runs these on what the engine is about to create; the
unit tests run them on the builders' output and on our chart rendered by helm. Each policy
returns human-readable violations, empty when the objects comply.

Operators create the pods of custom resources; a policy checks the fields of the resource that
end up on those pods (resources, spread, images) and trusts the operator where it is documented
to act (Strimzi and cass-operator create a PodDisruptionBudget for every cluster they run).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from opsctl.stack._names import ZONE_KEY

Manifest = dict[str, Any]

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
# Custom resources whose operator creates a PodDisruptionBudget on its own.
_OPERATOR_PDB = {"KafkaNodePool", "KafkaMirrorMaker2", "CassandraDatacenter", "Kafka"}
_TAG = re.compile(r":(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")


@dataclass(frozen=True)
class Violation:
    policy: str
    object: str  # Kind/namespace/name
    message: str

    def __str__(self) -> str:
        return f"[{self.policy}] {self.object}: {self.message}"


def ident(manifest: Manifest) -> str:
    meta = manifest.get("metadata", {})
    namespace = meta.get("namespace")
    where = f"{namespace}/" if namespace else ""
    return f"{manifest.get('kind')}/{where}{meta.get('name')}"


def _pod_spec(manifest: Manifest) -> dict[str, Any] | None:
    kind, spec = manifest.get("kind"), manifest.get("spec") or {}
    pod: dict[str, Any] | None = None
    if kind == "Pod":
        pod = spec
    elif kind == "CronJob":
        pod = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    elif kind in WORKLOAD_KINDS:
        pod = spec.get("template", {}).get("spec")
    return pod


def _containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers"):
        yield from pod.get(key) or []


def _resource_fields(manifest: Manifest) -> Iterator[tuple[str, Any]]:
    """(where, resources) for every container-resources field of a custom resource."""
    kind, spec = manifest.get("kind"), manifest.get("spec") or {}
    if kind in {"KafkaNodePool", "KafkaMirrorMaker2", "CassandraDatacenter"}:
        yield "spec.resources", spec.get("resources")
    elif kind == "Kafka":
        for operator in ("topicOperator", "userOperator"):
            if operator in spec.get("entityOperator", {}):
                yield (
                    f"spec.entityOperator.{operator}.resources",
                    spec["entityOperator"][operator].get("resources"),
                )
    elif kind in {"Redis", "RedisReplication", "RedisCluster"}:
        yield "spec.kubernetesConfig.resources", spec.get("kubernetesConfig", {}).get("resources")
        if spec.get("redisExporter", {}).get("enabled"):
            yield "spec.redisExporter.resources", spec["redisExporter"].get("resources")


def _has_requests_and_limits(resources: Any) -> bool:
    if not isinstance(resources, dict):
        return False
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    return all(key in requests and key in limits for key in ("cpu", "memory"))


def requests_and_limits(manifests: Sequence[Manifest]) -> list[Violation]:
    found = []
    for manifest in manifests:
        pod = _pod_spec(manifest)
        if pod is not None:
            for container in _containers(pod):
                if not _has_requests_and_limits(container.get("resources")):
                    found.append(
                        Violation(
                            "requests-and-limits",
                            ident(manifest),
                            f"container '{container.get('name')}' lacks cpu/memory "
                            "requests and limits",
                        )
                    )
        for where, resources in _resource_fields(manifest):
            if not _has_requests_and_limits(resources):
                found.append(
                    Violation(
                        "requests-and-limits",
                        ident(manifest),
                        f"{where} lacks cpu/memory requests and limits",
                    )
                )
    return found


def _replicas(manifest: Manifest, hpas: dict[tuple[str, str], int]) -> int:
    spec = manifest.get("spec") or {}
    kind = manifest.get("kind")
    meta = manifest.get("metadata", {})
    if kind in {"Deployment", "StatefulSet", "ReplicaSet"}:
        scaled = hpas.get((meta.get("namespace", ""), meta.get("name", "")))
        return scaled if scaled is not None else int(spec.get("replicas", 1))
    if kind in {"KafkaNodePool", "KafkaMirrorMaker2"}:
        return int(spec.get("replicas", 1))
    if kind == "CassandraDatacenter":
        return int(spec.get("size", 1))
    if kind == "RedisReplication":
        return int(spec.get("clusterSize", 1))
    if kind == "RedisCluster":
        return int(spec.get("clusterSize", 1))
    return 1


def _hpa_minimums(manifests: Sequence[Manifest]) -> dict[tuple[str, str], int]:
    found = {}
    for manifest in manifests:
        if manifest.get("kind") == "HorizontalPodAutoscaler":
            spec = manifest.get("spec", {})
            target = spec.get("scaleTargetRef", {}).get("name", "")
            namespace = manifest.get("metadata", {}).get("namespace", "")
            found[(namespace, target)] = int(spec.get("minReplicas", 1))
    return found


def _pod_labels(manifest: Manifest) -> dict[str, str]:
    kind = manifest.get("kind")
    if kind in {"Deployment", "StatefulSet", "ReplicaSet"}:
        labels: dict[str, str] = (
            manifest.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
        )
        return labels
    if kind == "RedisReplication":
        return {"app": manifest["metadata"]["name"]}
    return {}


def _selects(pdb: Manifest, namespace: str, labels: dict[str, str]) -> bool:
    if pdb.get("metadata", {}).get("namespace", "") != namespace or not labels:
        return False
    wanted = pdb.get("spec", {}).get("selector", {}).get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def disruption_budgets(manifests: Sequence[Manifest]) -> list[Violation]:
    hpas = _hpa_minimums(manifests)
    pdbs = [m for m in manifests if m.get("kind") == "PodDisruptionBudget"]
    found = []
    for manifest in manifests:
        kind = manifest.get("kind")
        if _replicas(manifest, hpas) <= 1 or kind in _OPERATOR_PDB:
            continue
        if kind == "RedisCluster":
            spec = manifest.get("spec", {})
            for role in ("redisLeader", "redisFollower"):
                if not spec.get(role, {}).get("pdb", {}).get("enabled"):
                    found.append(
                        Violation("pdb", ident(manifest), f"spec.{role}.pdb.enabled is not true")
                    )
            continue
        namespace = manifest.get("metadata", {}).get("namespace", "")
        labels = _pod_labels(manifest)
        if not any(_selects(pdb, namespace, labels) for pdb in pdbs):
            found.append(
                Violation(
                    "pdb",
                    ident(manifest),
                    f"{_replicas(manifest, hpas)} replicas and no PodDisruptionBudget selects them",
                )
            )
    return found


def _spreads_by_zone(constraints: Any) -> bool:
    return any(isinstance(c, dict) and c.get("topologyKey") == ZONE_KEY for c in constraints or [])


def zone_spread(manifests: Sequence[Manifest]) -> list[Violation]:
    hpas = _hpa_minimums(manifests)
    found = []
    for manifest in manifests:
        if _replicas(manifest, hpas) <= 1:
            continue
        kind, spec = manifest.get("kind"), manifest.get("spec") or {}
        problem = None
        if kind in {"Deployment", "StatefulSet", "ReplicaSet"}:
            pod = spec.get("template", {}).get("spec", {})
            if not _spreads_by_zone(pod.get("topologySpreadConstraints")):
                problem = "pod template has no topologySpreadConstraints on " + ZONE_KEY
        elif kind in {"KafkaNodePool", "KafkaMirrorMaker2"}:
            pod = spec.get("template", {}).get("pod", {})
            if not _spreads_by_zone(pod.get("topologySpreadConstraints")):
                problem = "spec.template.pod has no topologySpreadConstraints on " + ZONE_KEY
        elif kind == "CassandraDatacenter":
            racks = spec.get("racks") or []
            zoned = [r for r in racks if ZONE_KEY in (r.get("nodeAffinityLabels") or {})]
            if len(racks) < 2 or len(zoned) != len(racks):
                problem = "spec.racks must map to at least two zones via nodeAffinityLabels"
        elif kind == "RedisCluster":
            for role in ("redisLeader", "redisFollower"):
                if not _spreads_by_zone(spec.get(role, {}).get("topologySpreadConstraints")):
                    problem = f"spec.{role} has no topologySpreadConstraints on {ZONE_KEY}"
        if problem:
            found.append(Violation("zone-spread", ident(manifest), problem))
    return found


def _images(manifest: Manifest) -> Iterator[tuple[str, str]]:
    pod = _pod_spec(manifest)
    if pod is not None:
        for container in _containers(pod):
            yield f"container '{container.get('name')}'", str(container.get("image", ""))
    spec = manifest.get("spec") or {}
    if manifest.get("kind") in {"Redis", "RedisReplication", "RedisCluster"}:
        yield "spec.kubernetesConfig.image", str(spec.get("kubernetesConfig", {}).get("image", ""))
        if spec.get("redisExporter", {}).get("enabled"):
            yield "spec.redisExporter.image", str(spec["redisExporter"].get("image", ""))


def pinned_images(manifests: Sequence[Manifest]) -> list[Violation]:
    found = []
    for manifest in manifests:
        for where, image in _images(manifest):
            if "@sha256:" in image:
                continue
            match = _TAG.search(image.rsplit("/", 1)[-1])
            if match is None or match["tag"] == "latest":
                found.append(
                    Violation(
                        "no-latest", ident(manifest), f"{where} image '{image}' is not pinned"
                    )
                )
    return found


def _privileged(context: Any) -> bool:
    if not isinstance(context, dict):
        return False
    added = (context.get("capabilities") or {}).get("add") or []
    return bool(context.get("privileged")) or "SYS_ADMIN" in added or "ALL" in added


def no_privileged(manifests: Sequence[Manifest]) -> list[Violation]:
    found = []
    for manifest in manifests:
        pod = _pod_spec(manifest)
        contexts: list[tuple[str, Any]] = []
        if pod is not None:
            contexts += [
                (f"container '{c.get('name')}'", c.get("securityContext")) for c in _containers(pod)
            ]
        spec = manifest.get("spec") or {}
        for role in ("redisLeader", "redisFollower", "redisExporter"):
            if isinstance(spec.get(role), dict):
                contexts.append((f"spec.{role}", spec[role].get("securityContext")))
        for where, context in contexts:
            if _privileged(context):
                found.append(Violation("no-privileged", ident(manifest), f"{where} is privileged"))
    return found


MANIFEST_POLICIES: dict[str, Callable[[Sequence[Manifest]], list[Violation]]] = {
    "requests-and-limits": requests_and_limits,
    "pdb": disruption_budgets,
    "zone-spread": zone_spread,
    "no-latest": pinned_images,
    "no-privileged": no_privileged,
}


def check_all(manifests: Iterable[Manifest]) -> list[Violation]:
    objects = list(manifests)
    return [v for policy in MANIFEST_POLICIES.values() for v in policy(objects)]


def explicit_provider(resource_type: str, provider_name: str | None) -> str | None:
    """Every kubernetes resource names its region's provider, never the default one.

    ``provider_name`` is the provider resource's name (``default_<version>`` for Pulumi's
    default provider), None when the resource has none.
    """
    if not resource_type.startswith("kubernetes:"):
        return None
    name = provider_name or ""
    if not name:
        return "has no provider; pass the region's provider explicitly"
    if name.startswith("default"):
        return f"uses the default provider ({name}); pass the region's provider explicitly"
    return None
