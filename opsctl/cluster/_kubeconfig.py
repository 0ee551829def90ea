"""One kubeconfig for every simulated cluster, with the contexts the stack spec names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opsctl.errors import CheckFailed


def _single(config: dict[str, Any], key: str, origin: str) -> dict[str, Any]:
    entries = config.get(key) or []
    if len(entries) != 1 or not isinstance(entries[0], dict):
        raise CheckFailed(f"{origin}: expected exactly one entry under '{key}'")
    return entries[0]


def renamed(config: dict[str, Any], context: str, origin: str) -> dict[str, Any]:
    """kwokctl's one-cluster kubeconfig with cluster, user and context all named ``context``."""
    cluster = _single(config, "clusters", origin)
    user = _single(config, "users", origin)
    return {
        "cluster": {"name": context, "cluster": dict(cluster.get("cluster") or {})},
        "user": {"name": context, "user": dict(user.get("user") or {})},
        "context": {"name": context, "context": {"cluster": context, "user": context}},
    }


def merged(entries: Sequence[dict[str, Any]], current: str | None) -> dict[str, Any]:
    """A kubeconfig holding every entry from :func:`renamed`, sorted by context name."""
    ordered = sorted(entries, key=lambda entry: str(entry["context"]["name"]))
    names = [entry["context"]["name"] for entry in ordered]
    if current is None or current not in names:
        current = names[0] if names else ""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "current-context": current,
        "clusters": [entry["cluster"] for entry in ordered],
        "users": [entry["user"] for entry in ordered],
        "contexts": [entry["context"] for entry in ordered],
    }


def server_of(config: dict[str, Any], origin: str) -> str:
    server = _single(config, "clusters", origin).get("cluster", {}).get("server")
    if not isinstance(server, str) or not server:
        raise CheckFailed(f"{origin}: the cluster entry has no server URL")
    return server
