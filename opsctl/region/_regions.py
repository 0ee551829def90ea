"""What a region operation needs from where the regions run, apart from the shard map: the
one seam between the map moves (``_run``, ``_shards``: the same code everywhere) and the
platform. ``_local.LocalRegions`` implements it over the local stack's processes,
``_cluster.ClusterRegions`` over each region's Kubernetes cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from opsctl.region._shards import Backends


class Progress(Protocol):
    """Where an operation reports: a step begins, shards moved so far, a remark."""

    def step(self, text: str) -> None: ...

    def shards(self, done: int, total: int) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    def step(self, text: str) -> None:
        pass

    def shards(self, done: int, total: int) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class GatewayDrain:
    """One drain (or start) step: a local gateway process, or a cluster scale step."""

    name: str
    sessions: int | None  # sessions it was asked to move (None: not answering, or a start)
    seconds: float  # until the gateways it stopped were gone (or the started ones ready)
    per_second: float | None  # sessions / seconds
    action: str = "drained"  # drained | already stopped | started | already running | scaled N->M
    at_s: float | None = None  # when the step began, seconds after the first step began


@dataclass
class GatewayReport:
    """What draining or starting a region's gateways did, and what it warns about."""

    steps: list[GatewayDrain] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Regions(Protocol):
    """The regions of one stack, as a region operation sees them."""

    @property
    def names(self) -> list[str]: ...

    def backends(self, prefer_not: str | None = None) -> Backends:
        """Where the shard map and each region's Kafka are (``prefer_not``'s node last)."""
        ...

    def dispatchers_down(self, region: str) -> str | None:
        """Why the platform says the region's dispatchers are not running, or None (the map's
        own liveness, their reports, is checked apart)."""
        ...

    def unhealthy(self, region: str) -> list[str]:
        """The region's parts that fail their health check (for an unplanned failover)."""
        ...

    def drain_gateways(self, region: str, budget_per_s: float, progress: Progress) -> GatewayReport:
        """Drain the region's gateways, paced so the reconnects stay within the budget;
        resumable (gateways already drained are skipped)."""
        ...

    def start_gateways(self, region: str, progress: Progress) -> GatewayReport:
        """Bring the region's gateways back to what they were before the drain."""
        ...

    def serving(self, region: str) -> list[str]:
        """The region's gateways that still serve (processes running, pods present)."""
        ...

    def close(self) -> None: ...
