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
