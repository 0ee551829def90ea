"""What an evacuation or a restore moves, and the drain's pacing (opsctl.region._plan)."""

from __future__ import annotations

import pytest

from gateway.homes import SHARDS
from gateway.shardmap import ShardMap, draining, moved
from opsctl.errors import UserInputError
from opsctl.region import evacuation_plan, home_share, restore_plan
from opsctl.region._plan import batches, drain_pause_s, gateway_rate

pytestmark = pytest.mark.unit

TWO = ("eu-central", "us-east")
THREE = ("ap-east", "eu-central", "us-east")


def _after(shard_map: ShardMap, plan: dict[int, str]) -> ShardMap:
    return ShardMap(
        shard_map.epoch + 1,
        shard_map.regions,
        {**shard_map.rows, **moved(shard_map, plan, planned=True)},
    )


def test_evacuation_moves_only_the_regions_shards_and_all_of_them() -> None:
    fresh = ShardMap(0, THREE)
    plan = evacuation_plan(fresh, "eu-central")
    assert set(plan) == set(fresh.homed_in("eu-central"))
    assert "eu-central" not in set(plan.values())
    after = _after(fresh, plan)
    assert after.homed_in("eu-central") == []
    for shard in range(SHARDS):  # nobody else's shard changed home
        if shard not in plan:
            assert after.entry(shard).home == fresh.entry(shard).home


def test_a_second_evacuation_never_sends_shards_to_a_region_already_out() -> None:
    fresh = ShardMap(0, THREE)
    out = _after(fresh, evacuation_plan(fresh, "ap-east"))
    plan = evacuation_plan(out, "eu-central")
    assert set(plan.values()) == {"us-east"}


def test_the_last_region_homing_anything_cannot_be_evacuated() -> None:
    fresh = ShardMap(0, TWO)
    out = _after(fresh, evacuation_plan(fresh, "eu-central"))
    with pytest.raises(UserInputError, match="last region"):
        evacuation_plan(out, "us-east")
    with pytest.raises(UserInputError, match="last region"):
        evacuation_plan(ShardMap(0, ("solo",)), "solo")


def test_an_unknown_region_is_bad_input() -> None:
    fresh = ShardMap(0, TWO)
    with pytest.raises(UserInputError, match="unknown region 'mars'"):
        evacuation_plan(fresh, "mars")
    with pytest.raises(UserInputError, match="unknown region 'mars'"):
        restore_plan(fresh, "mars")


def test_restore_brings_back_exactly_the_rendezvous_shards() -> None:
    fresh = ShardMap(0, TWO)
    out = _after(fresh, evacuation_plan(fresh, "eu-central"))
    plan = restore_plan(out, "eu-central")
    assert set(plan) == set(fresh.homed_in("eu-central"))
    back = _after(out, plan)
    assert back.share() == fresh.share()
    assert restore_plan(back, "eu-central") == {}
    assert restore_plan(fresh, "us-east") == {}


def test_restore_also_reactivates_shards_an_interrupted_evacuation_left_draining() -> None:
    fresh = ShardMap(0, TWO)
    stuck = sorted(fresh.homed_in("eu-central"))[:5]
    drained = ShardMap(1, TWO, draining(fresh, stuck))
    plan = restore_plan(drained, "eu-central")
    assert plan == dict.fromkeys(stuck, "eu-central")  # moved "to itself": active again
    assert restore_plan(drained, "us-east") == {}


def test_home_share_is_a_fraction_per_region() -> None:
    fresh = ShardMap(0, TWO)
    share = home_share(fresh)
    assert set(share) == set(TWO)
    assert sum(share.values()) == pytest.approx(1.0)
    out = _after(fresh, evacuation_plan(fresh, "us-east"))
    assert home_share(out) == {"eu-central": 1.0, "us-east": 0.0}


def test_batches_cover_the_plan_in_shard_order() -> None:
    plan = dict.fromkeys(range(10, 0, -1), "x")
    got = batches(plan, 4)
    assert [list(b) for b in got] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    with pytest.raises(UserInputError):
        batches(plan, 0)


def test_the_drain_pace_keeps_reconnects_within_the_budget() -> None:
    # 1000 sessions at 500/s need 2 s; a gateway that took 0.5 s leaves 1.5 s to wait.
    assert drain_pause_s(1000, 500, 0.5) == pytest.approx(1.5)
    assert drain_pause_s(100, 500, 3.0) == 0.0
    assert gateway_rate(0, 2) == 0.0
    assert gateway_rate(800, 2) == pytest.approx(500)  # paced over 80 % of the window
    with pytest.raises(ValueError, match="budget"):
        drain_pause_s(1, 0, 0)


def test_cassandra_timeouts_and_unknown_cas_outcomes_are_retried_other_errors_are_not() -> None:
    from cassandra import WriteTimeout, WriteType
    from cassandra.protocol import ErrorMessage

    from opsctl.region._shards import transient

    unknown = ErrorMessage(0x1700, "CAS operation result is unknown", {})
    assert transient(unknown)
    assert transient(WriteTimeout("CAS timed out", consistency=9, write_type=WriteType.CAS))
    assert not transient(ErrorMessage(0x2200, "Invalid query", {}))
    assert not transient(ValueError("a bug"))
