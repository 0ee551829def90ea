"""What an evacuation or a restore moves, and how fast a drain may go: pure functions over
the shard map (``gateway.shardmap.ShardMap``), no I/O.

Why opsctl plans the evacuation itself instead of calling ``gateway.shardmap.evacuation_plan``:
that one ranks each shard over **every** other region of the map, so with three regions and one
already evacuated, evacuating a second would send shards to the empty one. Here a shard goes to
its next rendezvous region among the regions that still home shards, which on two regions (and
whenever no region is out) is the same choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from gateway.homes import SHARDS, ranked
from gateway.shardmap import DRAINING, ShardMap
from gateway.shardmap import restore_plan as _restore_plan
from opsctl.errors import UserInputError

# Shards moved per planned batch (drain, wait for the old home, move, reconcile): a shard is
# paused only while its own batch is in flight, and progress moves in visible steps.
DEFAULT_BATCH = 512


def check_region(shard_map: ShardMap, region: str) -> None:
    """Exit 2 when ``region`` is not one of the map's regions."""
    if region not in shard_map.regions:
        raise UserInputError(
            f"unknown region '{region}': the shard map's regions are "
            f"{', '.join(shard_map.regions)}",
            hint="see `opsctl spec regions --stack <stack>`",
        )


def active_regions(shard_map: ShardMap) -> list[str]:
    """The regions that home at least one shard, in map order."""
    share = shard_map.share()
    return [r for r in shard_map.regions if share.get(r, 0) > 0]


def evacuation_plan(shard_map: ShardMap, region: str) -> dict[int, str]:
    """shard -> new home for every shard homed in ``region``: its next rendezvous region among
    the other regions that still home shards. Exit 2 (nothing changed) for an unknown region
    or when no other region homes anything (``region`` is the last one)."""
    check_region(shard_map, region)
    targets = [r for r in active_regions(shard_map) if r != region]
    if not targets:
        raise UserInputError(
            f"cannot evacuate '{region}': it is the last region homing conversations "
            f"(regions: {', '.join(shard_map.regions)})",
            hint="restore another region first (`opsctl region restore REGION`)",
        )
    return {s: ranked(s, targets)[0] for s in shard_map.homed_in(region)}


def restore_plan(shard_map: ShardMap, region: str) -> dict[int, str]:
    """shard -> ``region`` for every shard whose rendezvous home is ``region`` but which is homed
    elsewhere now, and every shard homed in ``region`` left draining by an interrupted
    evacuation (moved "to itself": active again at a new epoch). Exit 2 for an unknown
    region."""
    check_region(shard_map, region)
    stuck = {
        s: region
        for s, entry in shard_map.rows.items()
        if entry.home == region and entry.state == DRAINING
    }
    return {**_restore_plan(shard_map, region), **stuck}


def batches(plan: Mapping[int, str], size: int) -> list[dict[int, str]]:
    """The plan in batches of ``size`` shards, by shard number (a resumed run re-plans from the
    map, so the batches it sees are the same minus those done)."""
    if size < 1:
        raise UserInputError(f"--batch must be at least 1 (got {size})")
    items = sorted(plan.items())
    return [dict(items[i : i + size]) for i in range(0, len(items), size)]


def home_share(shard_map: ShardMap) -> dict[str, float]:
    """Fraction of the 4096 shards homed in each region of the map (0 included)."""
    return {region: count / SHARDS for region, count in shard_map.share().items()}


def drain_pause_s(sessions: int, budget_per_s: float, elapsed_s: float) -> float:
    """How long to wait after one gateway began draining ``sessions`` sessions ``elapsed_s`` ago
    before the next gateway may begin, so that the reconnects both cause, averaged, stay within
    ``budget_per_s`` (the survivors absorb them)."""
    if budget_per_s <= 0:
        raise ValueError("the reconnect budget must be positive")
    return max(0.0, sessions / budget_per_s - elapsed_s)


def gateway_rate(sessions: int, window_s: float, spread: float = 0.8) -> float:
    """Reconnects per second one gateway causes when it drains ``sessions`` over its window
    (it paces them over ``spread`` of it: ``gateway.limits.drain_schedule``)."""
    if sessions <= 0:
        return 0.0
    if window_s <= 0:
        return math.inf
    return sessions / (window_s * spread)


# -- a cluster's gateway drain: the Deployment scaled down in steps ---------------------------


def pods_per_step(
    budget_per_s: float,
    window_s: float,
    sessions_per_pod: int,
    max_unavailable: int | None = None,
    spread: float = 0.8,
) -> int:
    """Gateway pods one scale-down step may take away: as many as drain together within the
    budget (each paces its sessions over ``spread`` of its window, ``gateway_rate``), at least
    one, and no more than the PDB lets be unavailable at once. The chart's rolling update
    takes the same number (its derived maxSurge)."""
    if budget_per_s <= 0:
        raise ValueError("the reconnect budget must be positive")
    if sessions_per_pod <= 0:
        step = max_unavailable or 1_000_000  # nothing to move: as fast as the PDB allows
    else:
        step = max(1, math.floor(budget_per_s * window_s * spread / sessions_per_pod))
    if max_unavailable is not None:
        step = min(step, max(1, max_unavailable))
    return step


def scale_steps(replicas: int, per_step: int) -> list[int]:
    """The replica counts a drain from ``replicas`` to 0 passes through, ``per_step`` at a
    time (3, 1 -> [2, 1, 0]); a resumed drain starts from the replicas it finds."""
    if per_step < 1:
        raise ValueError("a step takes at least one pod")
    return [max(0, replicas - per_step * i) for i in range(1, math.ceil(replicas / per_step) + 1)]


def pdb_max_unavailable(pdb_spec: Mapping[str, object] | None, replicas: int) -> int | None:
    """How many of ``replicas`` pods a PodDisruptionBudget lets be unavailable at once (the
    disruption controller's arithmetic: maxUnavailable rounds a percentage up, minAvailable
    too); None without a PDB."""
    if not pdb_spec:
        return None

    def scaled(value: object) -> int:
        if isinstance(value, str) and value.endswith("%"):
            return math.ceil(replicas * int(value[:-1]) / 100)
        return int(str(value))

    if pdb_spec.get("maxUnavailable") is not None:
        return scaled(pdb_spec["maxUnavailable"])
    if pdb_spec.get("minAvailable") is not None:
        return max(0, replicas - scaled(pdb_spec["minAvailable"]))
    return None
