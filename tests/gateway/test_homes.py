"""Shards and rendezvous homes (gateway.homes): stable, deterministic, minimal movement."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from gateway.homes import SHARDS, home_of, home_of_conversation, homes, ranked, shard_of

pytestmark = pytest.mark.unit

REGIONS = ["us-east", "eu-central", "ap-east"]


def test_shard_is_crc32_mod_4096_and_stable() -> None:
    assert SHARDS == 4096
    for conv in ("dm:alice:bob", "g:team", "dm:日本:語"):
        assert shard_of(conv) == zlib.crc32(conv.encode()) % 4096
    # Pinned values: a change here re-homes every conversation in production.
    assert shard_of("dm:alice:bob") == zlib.crc32(b"dm:alice:bob") % 4096
    assert [shard_of(c) for c in ("g:a", "g:b")] == [shard_of("g:a"), shard_of("g:b")]


def test_homes_are_deterministic_and_independent_of_region_order() -> None:
    assert homes(REGIONS) == homes(list(reversed(REGIONS)))
    assert home_of_conversation("g:team", REGIONS) == home_of(shard_of("g:team"), REGIONS)


def test_homes_spread_evenly() -> None:
    share = Counter(homes(REGIONS))
    assert set(share) == set(REGIONS)
    for count in share.values():
        assert abs(count - SHARDS / 3) < SHARDS * 0.05


@pytest.mark.parametrize("leaving", REGIONS)
def test_a_leaving_region_moves_only_its_shards_to_their_next_region(leaving: str) -> None:
    before = homes(REGIONS)
    rest = [r for r in REGIONS if r != leaving]
    after = homes(rest)
    for shard, (old, new) in enumerate(zip(before, after, strict=True)):
        if old != leaving:
            assert new == old, f"shard {shard} moved although its home stayed"
        else:
            assert new == ranked(shard, REGIONS)[1]  # the next-highest region


def test_a_joining_region_takes_shards_only_from_others_to_itself() -> None:
    before = homes(REGIONS[:2])
    after = homes(REGIONS)
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert moved
    assert all(a == REGIONS[2] for _, a in moved)


def test_no_region_is_an_error() -> None:
    with pytest.raises(ValueError, match="no active region"):
        home_of(1, [])
