"""Kubernetes access shared by commands: a client per region context, and server-side apply."""

from opsctl.kube._apply import FIELD_MANAGER, AppliedObject, apply_objects
from opsctl.kube._client import client_for_context, default_kubeconfig
from opsctl.kube._regions import apply_to_regions, select_regions

__all__ = [
    "FIELD_MANAGER",
    "AppliedObject",
    "apply_objects",
    "apply_to_regions",
    "client_for_context",
    "default_kubeconfig",
    "select_regions",
]
