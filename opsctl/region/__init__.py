"""Region operations (docs/multi-region.md 7.1-7.3): evacuate a region's conversations to the
other regions and drain its gateways, or fail over from a region that is gone
(``unreachable``), and restore it afterwards, on a running local stack or on the stack's
clusters (``ClusterRegions``).

    from opsctl.region import LocalRegions, Request, evacuate, restore
    regions = LocalRegions.of(LocalStack.recorded(state_dir), "staging")
    outcome = evacuate(regions, Request("eu-central", budget_per_s=500))
    outcome.complete, outcome.left, outcome.as_dict()

The shard map in Cassandra (``gateway.shardmap``) is the source of truth: every step is a
compare-and-set on it and is planned from it as read now, so re-running an interrupted or
crashed operation continues where it stopped. Modules: ``_plan`` (pure: what moves, pacing),
``_shards`` (the map's operations over Cassandra and Kafka), ``_regions`` (the interface to
where the regions run), ``_local`` (the local stack's regions and gateways; what "drain" means
there), ``_cluster`` (each region's Kubernetes cluster: the gateway Deployment scaled down in
paced steps), ``_run`` (the steps, the outcome, interruption), ``_progress`` (Rich),
``_status`` (home share and conflicts for opsctl status).
"""

from opsctl.region._cluster import ClusterRegions
from opsctl.region._local import Gateway, LocalRegions
from opsctl.region._plan import DEFAULT_BATCH, evacuation_plan, home_share, restore_plan
from opsctl.region._regions import GatewayDrain, NullProgress, Progress, Regions
from opsctl.region._run import (
    EVACUATE,
    PLANNED,
    RESTORE,
    UNPLANNED,
    Outcome,
    Request,
    evacuate,
    restore,
)
from opsctl.region._status import MapView, read_map

__all__ = [
    "DEFAULT_BATCH",
    "EVACUATE",
    "PLANNED",
    "RESTORE",
    "UNPLANNED",
    "ClusterRegions",
    "Gateway",
    "GatewayDrain",
    "LocalRegions",
    "MapView",
    "NullProgress",
    "Outcome",
    "Progress",
    "Regions",
    "Request",
    "evacuate",
    "evacuation_plan",
    "home_share",
    "read_map",
    "restore",
    "restore_plan",
]
