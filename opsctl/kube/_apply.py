"""Server-side apply of plain manifests, namespaces first, all or nothing on a dry run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opsctl.errors import CheckFailed

FIELD_MANAGER = "opsctl"
# Kinds that others depend on go first.
_ORDER = {"Namespace": 0, "CustomResourceDefinition": 1}


@dataclass(frozen=True)
class AppliedObject:
    kind: str
    namespace: str | None
    name: str
    # On a dry run, an object in a namespace this apply would create cannot be validated.
    validated: bool = True

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


def apply_objects(
    api_client: Any, objects: list[dict[str, Any]], *, dry_run: bool = False
) -> list[AppliedObject]:
    """Apply every object; with ``dry_run`` the API server validates and persists nothing.

    A real apply creates the namespaces first, then dry-runs everything else, then applies
    it: an object the API server refuses stops the set before anything else changes.
    """
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

    dynamic: Any = DynamicClient(api_client)  # type: ignore[no-untyped-call]
    namespaces = [o for o in objects if o.get("kind") == "Namespace"]
    rest = sorted(
        (o for o in objects if o.get("kind") != "Namespace"),
        key=lambda o: _ORDER.get(str(o.get("kind")), 2),
    )

    def apply_one(body: dict[str, Any], mode: str | None) -> AppliedObject:
        kind, meta = str(body["kind"]), body.get("metadata") or {}
        target = AppliedObject(kind, meta.get("namespace"), str(meta.get("name")))
        try:
            resource = dynamic.resources.get(api_version=body["apiVersion"], kind=kind)
            extra = {"dry_run": mode} if mode else {}
            dynamic.server_side_apply(
                resource, body=body, field_manager=FIELD_MANAGER, force_conflicts=True, **extra
            )
        except ResourceNotFoundError as exc:
            raise CheckFailed(
                f"{target}: the cluster does not serve {body['apiVersion']} {kind}",
                hint="install the operator or CRDs that define it first",
            ) from exc
        except DynamicApiError as refused:
            summary = refused.summary()  # type: ignore[no-untyped-call]
            phase = "validation (dry run)" if mode else "apply"
            raise CheckFailed(f"{target}: {phase} refused: {summary}") from refused
        return target

    if dry_run:
        checked = [apply_one(body, "All") for body in namespaces]
        existing = _existing_namespaces(dynamic)
        for body in rest:
            namespace = (body.get("metadata") or {}).get("namespace")
            if namespace and namespace not in existing:
                meta = body.get("metadata") or {}
                checked.append(
                    AppliedObject(str(body["kind"]), namespace, str(meta.get("name")), False)
                )
            else:
                checked.append(apply_one(body, "All"))
        return checked
    applied = [apply_one(body, None) for body in namespaces]
    for body in rest:
        apply_one(body, "All")
    applied.extend(apply_one(body, None) for body in rest)
    return applied


def _existing_namespaces(dynamic: Any) -> set[str]:
    resource = dynamic.resources.get(api_version="v1", kind="Namespace")
    return {item.metadata.name for item in dynamic.get(resource).items}
