"""The shard map as ``opsctl status`` shows it: per region, the share of the 4096 shards homed
there; and the map epoch, draining shards and held records."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.shardmap import DRAINING
from opsctl.region._plan import home_share
from opsctl.region._regions import Regions
from opsctl.region._shards import Shards


@dataclass(frozen=True)
class MapView:
    epoch: int
    home_share: dict[str, float]  # region -> fraction of the shards homed there
    draining: int
    held: int


def read_map(regions: Regions) -> MapView:
    """Read the map from the regions' Cassandra (CheckFailed when it cannot)."""
    shards = Shards(regions.backends())
    shards.connect()
    try:

        async def read() -> MapView:
            current = await shards.read()
            draining = len([e for e in current.rows.values() if e.state == DRAINING])
            return MapView(current.epoch, home_share(current), draining, await shards.held())

        return asyncio.run(read())
    finally:
        shards.close()
