"""The shard map model (gateway.shardmap): default homes, epochs, the per-record decision, the
evacuation and restore plans; schema v1/v2 records; the epoch-aware fence (gateway.sequencer).

The decision table is what keeps every record sequenced exactly once or held: the last test
plays a planned move with records arriving at both regions in every order and checks that no
record is skipped by both.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from gateway.config import ConfigError, load
from gateway.dispatcher import BadRecord, parse_record
from gateway.homes import SHARDS, home_of, ranked
from gateway.sequencer import Fence, Fenced, Gap
from gateway.shardmap import (
    ACTIVE,
    DRAINING,
    INITIAL,
    PLANNED,
    UNPLANNED,
    Decision,
    Entry,
    ShardMap,
    decide,
    draining,
    evacuation_plan,
    moved,
    restore_plan,
)
from tests.gateway.test_fencing_unit import FakeFences, sequencer

pytestmark = pytest.mark.unit

REGIONS = ("us-east", "eu-central", "ap-east")


def fresh(regions: tuple[str, ...] = REGIONS) -> ShardMap:
    return ShardMap(0, regions)


def test_a_fresh_map_homes_every_shard_at_its_rendezvous_region_at_epoch_0() -> None:
    m = fresh()
    for shard in (0, 1, 2047, SHARDS - 1):
        assert m.entry(shard) == Entry(home_of(shard, REGIONS), 0, ACTIVE, INITIAL)
    share = m.share()
    assert sum(share.values()) == SHARDS
    assert all(SHARDS / 3 * 0.9 < n < SHARDS / 3 * 1.1 for n in share.values())
    # One region: everything is homed there, as on the one-region stack.
    assert ShardMap(0, ("local",)).share() == {"local": SHARDS}


def test_evacuation_moves_only_the_region_s_shards_each_to_its_next_rendezvous_region() -> None:
    m = fresh()
    plan = evacuation_plan(m, "eu-central")
    assert set(plan) == set(m.homed_in("eu-central"))
    for shard, target in plan.items():
        assert target == ranked(shard, REGIONS)[1]  # the next-highest score
    after = ShardMap(1, REGIONS, moved(m, plan, planned=True))
    assert after.homed_in("eu-central") == []
    untouched = [s for s in range(SHARDS) if s not in plan]
    assert all(after.entry(s) == m.entry(s) for s in untouched)
    assert all(after.entry(s) == Entry(plan[s], 1, ACTIVE, PLANNED) for s in plan)
    # Restore moves exactly those back, and nothing else.
    back = restore_plan(after, "eu-central")
    assert back == dict.fromkeys(plan, "eu-central")
    with pytest.raises(ValueError, match="only region"):
        evacuation_plan(ShardMap(0, ("local",)), "local")


def test_draining_keeps_home_and_epoch() -> None:
    m = fresh()
    rows = draining(m, [7])
    assert rows == {7: Entry(m.entry(7).home, 0, DRAINING, INITIAL)}


def at(home: str, epoch: int, state: str = ACTIVE, how: str = PLANNED) -> ShardMap:
    return ShardMap(max(epoch, 3), ("a", "b"), {5: Entry(home, epoch, state, how)})


@pytest.mark.parametrize(
    ("shard_map", "region", "stamped", "expected"),
    [
        (ShardMap(0, ("a",)), "a", 0, Decision.SEQUENCE),  # one region: always
        (at("a", 3), "a", 3, Decision.SEQUENCE),
        (at("a", 3), "b", 3, Decision.SKIP),
        (at("a", 3), "a", 4, Decision.REFRESH),  # the gateway saw a newer map
        (at("a", 3), "a", 2, Decision.SEQUENCE_CHECKED),  # planned, stamped before the move
        (at("a", 3, how=UNPLANNED), "a", 2, Decision.SEQUENCE_SEEN_OR_HOLD),
        (at("a", 3), "b", 2, Decision.HOLD),  # stale stamp of a shard that left: hold
        (at("a", 3, DRAINING), "a", 3, Decision.HOLD),
        (at("a", 3, DRAINING), "b", 3, Decision.HOLD),
        (at("a", 0, how=INITIAL), "a", 0, Decision.SEQUENCE),
    ],
)
def test_decisions(shard_map: ShardMap, region: str, stamped: int, expected: Decision) -> None:
    assert decide(shard_map, region, 5, stamped) is expected


def test_a_planned_move_never_lets_both_regions_skip_a_record() -> None:
    """Shard 5 moves a -> b: epoch 1 draining, epoch 2 moved. A record stamped at epoch e is
    seen by region a with map epoch ma and by region b with map epoch mb, in any combination
    (mirror lag and stale maps); a dispatcher that saw a newer stamp than its map re-reads it.
    Nobody may skip it in both regions, and it is sequenced by b whenever b's map is current."""
    maps = [
        ShardMap(0, ("a", "b"), {5: Entry("a", 0)}),
        ShardMap(1, ("a", "b"), {5: Entry("a", 0, DRAINING)}),
        ShardMap(2, ("a", "b"), {5: Entry("b", 2, ACTIVE, PLANNED)}),
    ]

    def outcome(region: str, map_epoch: int, stamped: int) -> Decision:
        d = decide(maps[map_epoch], region, 5, stamped)
        return decide(maps[stamped], region, 5, stamped) if d is Decision.REFRESH else d

    for stamped, ma, mb in itertools.product(range(3), repeat=3):
        a, b = outcome("a", ma, stamped), outcome("b", mb, stamped)
        handled = {a, b} - {Decision.SKIP}
        assert handled, f"stamp {stamped}, maps a={ma} b={mb}: skipped by both"
        if a in (Decision.SEQUENCE, Decision.SEQUENCE_CHECKED):
            assert ma == 0, "a sequences only while it is the active home"
        if mb == 2:
            assert b is not Decision.SKIP


def test_schema_v1_and_v2_records() -> None:
    v1 = {
        "v": 1,
        "mid": "m1",
        "conv": "dm:a:b",
        "kind": "dm",
        "from": "a",
        "dev": "d",
        "cmid": "c",
        "to": "b",
        "body": "hi",
        "ts": 1,
        "gw": "gw-1",
    }
    old = parse_record(json.dumps(v1).encode())
    assert (old.epoch, old.region) == (0, None)
    new = parse_record(json.dumps({**v1, "v": 2, "ep": 7, "rg": "eu-central"}).encode())
    assert (new.epoch, new.region, new.message_id) == (7, "eu-central", "m1")
    for bad in ({**v1, "v": 2}, {**v1, "v": 2, "ep": -1, "rg": "x"}, {**v1, "v": 3}):
        with pytest.raises(BadRecord):
            parse_record(json.dumps(bad).encode())


def test_regions_setting() -> None:
    base = {"IMGW_KAFKA_BOOTSTRAP": "h:1", "IMGW_CASSANDRA_HOSTS": "h:2"}
    one = load("migrate", {**base, "IMGW_REGION": "eu"})
    assert (one.region_list, one.peers, one.relay_group) == (["eu"], [], "im-relay.eu")
    two = load("migrate", {**base, "IMGW_REGION": "eu", "IMGW_REGIONS": "us,eu"})
    assert (two.region_list, two.peers) == (["us", "eu"], ["us"])
    with pytest.raises(ConfigError, match="IMGW_REGIONS"):
        load("migrate", {**base, "IMGW_REGION": "ap", "IMGW_REGIONS": "us,eu"})


def test_fence_epochs_a_moved_shard_starts_above_the_old_ceiling() -> None:
    async def main() -> None:
        store = FakeFences()
        old = sequencer(store, generation=4)
        await old.take("c", 0, 3, 1)  # region "local", epoch 0
        store.last["c"] = 3
        ceiling = store.rows["c"].ceiling
        # The shard moved here at epoch 2: start above the old block, announce the rest.
        new = sequencer(store, generation=1)  # a lower generation of another group is fine
        got = await new.take("c", 0, 1, 1, epoch=2)
        assert got.seqs == [ceiling + 1]
        assert got.gap == Gap("c", 4, ceiling)
        assert store.rows["c"].epoch == 2
        # The old home (epoch 0 in its map) is refused, flagged so it re-reads its map.
        with pytest.raises(Fenced) as refused:
            await sequencer(store, generation=9).take("c", 0, 1, 1, epoch=0)
        assert refused.value.newer_epoch
        # A block of an older epoch in memory is never reused after the map moved on.
        again = await new.take("c", 0, 1, 1, epoch=2)
        assert again.seqs == [ceiling + 2]

    asyncio.run(main())


def test_member_owners_share_one_token_per_member() -> None:
    async def main() -> None:
        store = FakeFences()
        member = sequencer(store, generation=3)
        await member.take("c", "m1", 1, 1)
        assert store.rows["c"] == Fence(0, "local:3:m1", 8)
        await member.take("c", "m1", 1, 1)  # through another topic-partition: same owner
        with pytest.raises(Fenced, match="partition count"):
            await sequencer(store, generation=3).take("c", "m2", 1, 1)

    asyncio.run(main())
