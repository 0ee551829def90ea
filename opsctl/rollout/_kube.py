"""The few Kubernetes calls a rollout makes, on plain JSON dicts.

``KubeApi`` is what the driver talks to; ``RestKubeApi`` sends it to a real API server and a
fake in the unit tests records every body. Requests go through the kubernetes client's
configured connection (certificates, tokens, contexts) but bodies stay plain dicts, so the
patch sent is exactly the patch written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from opsctl.errors import Forbidden, KubeError, UserInputError

PatchType = Literal["strategic", "merge", "json"]
CONTENT_TYPES: dict[PatchType, str] = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}
RBAC_MANIFEST = "infra/rbac/opsctl-rollout.yaml"


class KubeApi(Protocol):
    context: str

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def patch(
        self, kind: str, namespace: str, name: str, body: Any, patch_type: PatchType
    ) -> dict[str, Any]: ...

    def delete(self, kind: str, namespace: str, name: str) -> None: ...

    def can_i(self, verb: str, kind: str, namespace: str, name: str | None = None) -> bool: ...


# kind -> (API prefix, plural)
_RESOURCES = {
    "deployments": ("/apis/apps/v1", "deployments"),
    "replicasets": ("/apis/apps/v1", "replicasets"),
    "pods": ("/api/v1", "pods"),
    "configmaps": ("/api/v1", "configmaps"),
}
_GROUPS = {"deployments": "apps", "replicasets": "apps", "pods": "", "configmaps": ""}


@dataclass
class RestKubeApi:
    """KubeApi over one kubeconfig context."""

    context: str
    kubeconfig: Path | None = None
    timeout: float = 10.0

    def __post_init__(self) -> None:
        from kubernetes.config import new_client_from_config
        from kubernetes.config.config_exception import ConfigException

        try:
            self._client = new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self.kubeconfig) if self.kubeconfig else None,
                context=self.context,
            )
        except (ConfigException, OSError) as error:
            source = self.kubeconfig or "$KUBECONFIG / ~/.kube/config"
            raise UserInputError(
                f"kube context '{self.context}' is not usable from {source}: {error}",
                hint="pass --kubeconfig, or run `opsctl cluster up` for simulated clusters",
            ) from None

    def close(self) -> None:
        self._client.close()

    def _path(self, kind: str, namespace: str, name: str | None = None) -> str:
        prefix, plural = _RESOURCES[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}"
        return f"{path}/{name}" if name else path

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
        what: str,
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            _, url, headers, data, _ = self._client.param_serialize(
                method,
                path,
                query_params=query,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(
                method, url, header_params=headers, body=data, _request_timeout=self.timeout
            )
            response.read()
            status, raw = int(response.status), response.data
        except Exception as error:  # connection refused, TLS, timeouts: no HTTP status
            from kubernetes.client.exceptions import ApiException

            if isinstance(error, ApiException) and error.status:
                status, raw = int(error.status), error.body or b""
            else:
                raise KubeError(
                    f"{self.context}: {what}: API server unreachable ({type(error).__name__})",
                    status=0,
                ) from error
        payload: Any = None
        if raw:
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        if status == 403:
            detail = payload.get("message") if isinstance(payload, dict) else payload
            raise Forbidden(
                f"{self.context}: forbidden to {what}: {detail}",
                status=403,
                hint=f"bind the Role in {RBAC_MANIFEST} to the identity opsctl runs as",
            )
        return status, payload

    def _ok(self, status: int, payload: Any, what: str) -> dict[str, Any]:
        if status >= 300:
            detail = payload.get("message") if isinstance(payload, dict) else payload
            raise KubeError(f"{self.context}: {what}: {status} {detail}", status=status)
        return payload if isinstance(payload, dict) else {}

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        what = f"get {kind} {namespace}/{name}"
        status, payload = self._request("GET", self._path(kind, namespace, name), what=what)
        if status == 404:
            return None
        return self._ok(status, payload, what)

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        what = f"list {kind} in {namespace}"
        query = [("labelSelector", selector)] if selector else None
        status, payload = self._request("GET", self._path(kind, namespace), query=query, what=what)
        items = self._ok(status, payload, what).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("metadata", {}).get("name", "?")
        what = f"create {kind} {namespace}/{name}"
        status, payload = self._request("POST", self._path(kind, namespace), body=body, what=what)
        return self._ok(status, payload, what)

    def patch(
        self, kind: str, namespace: str, name: str, body: Any, patch_type: PatchType
    ) -> dict[str, Any]:
        what = f"patch {kind} {namespace}/{name}"
        status, payload = self._request(
            "PATCH",
            self._path(kind, namespace, name),
            body=body,
            content_type=CONTENT_TYPES[patch_type],
            what=what,
        )
        return self._ok(status, payload, what)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        what = f"delete {kind} {namespace}/{name}"
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        status, payload = self._request(
            "DELETE", self._path(kind, namespace, name), body=body, what=what
        )
        if status != 404:
            self._ok(status, payload, what)

    def can_i(self, verb: str, kind: str, namespace: str, name: str | None = None) -> bool:
        attributes: dict[str, Any] = {
            "namespace": namespace,
            "verb": verb,
            "group": _GROUPS[kind],
            "resource": kind,
        }
        if name:
            attributes["name"] = name
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        what = "create selfsubjectaccessreviews"
        path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        status, payload = self._request("POST", path, body=review, what=what)
        result = self._ok(status, payload, what)
        return bool(result.get("status", {}).get("allowed"))


# What opsctl rollout does, and so what its Role must allow (kept in step with RBAC_MANIFEST).
# "{state}" stands for the state ConfigMap's name.
REQUIRED_PERMISSIONS: tuple[tuple[str, str, str | None], ...] = (
    ("get", "deployments", None),
    ("patch", "deployments", None),
    ("create", "deployments", None),
    ("delete", "deployments", None),
    ("list", "replicasets", None),
    ("list", "pods", None),
    ("create", "configmaps", None),
    ("get", "configmaps", "{state}"),
    ("patch", "configmaps", "{state}"),
)


def check_permissions(api: KubeApi, namespace: str, state_configmap: str) -> None:
    """Ask the API server (SelfSubjectAccessReview) before changing anything."""
    missing = []
    for verb, kind, name in REQUIRED_PERMISSIONS:
        resource = name.format(state=state_configmap) if name else None
        if not api.can_i(verb, kind, namespace, resource):
            missing.append(f"{verb} {kind}" + (f"/{resource}" if resource else ""))
    if missing:
        raise Forbidden(
            f"{api.context}: opsctl rollout lacks permissions in namespace '{namespace}': "
            + ", ".join(missing),
            status=403,
            hint=f"apply {RBAC_MANIFEST} in '{namespace}' and bind its Role to this identity",
        )
