"""Apply a set of objects to each selected region's cluster, region by region."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsctl.errors import UserInputError
from opsctl.kube._apply import AppliedObject, apply_objects
from opsctl.kube._client import client_for_context
from opsctl.spec import Region, StackSpec


def select_regions(spec: StackSpec, region: str | None) -> list[Region]:
    if region is None:
        return list(spec.regions)
    for candidate in spec.regions:
        if candidate.name == region:
            return [candidate]
    names = ", ".join(r.name for r in spec.regions)
    raise UserInputError(f"--region: '{region}' is not a region of '{spec.environment}' ({names})")


def apply_to_regions(
    regions: list[Region],
    objects_for: Callable[[Region], list[dict[str, Any]]],
    *,
    kubeconfig: Path | None,
    dry_run: bool,
) -> dict[str, list[AppliedObject]]:
    """Every region's client is opened first, so a missing context fails before any change."""
    clients = {
        region.name: client_for_context(kubeconfig, region.kube_context) for region in regions
    }
    applied: dict[str, list[AppliedObject]] = {}
    try:
        for region in regions:
            applied[region.name] = apply_objects(
                clients[region.name], objects_for(region), dry_run=dry_run
            )
    finally:
        for client in clients.values():
            client.close()
    return applied
