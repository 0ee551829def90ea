"""opsctl status on a multi-region stack: the per-region queries for a shared Prometheus and
the multi-region values, without a stack."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from opsctl.errors import CheckFailed
from opsctl.status import NO_SHARD_MAP, QUERIES, RegionStatus
from opsctl.status import _add_homes as add_homes
from opsctl.status._collect import multi_region_queries, queries

pytestmark = pytest.mark.unit


def test_a_shared_prometheus_is_asked_for_one_regions_series() -> None:
    scoped = queries("us-east")
    assert set(scoped) == set(QUERIES)
    for key, expr in scoped.items():
        assert 'region="us-east"' in expr, key
    assert scoped["cassandra_up"] == 'min(up{job="cassandra",region="us-east"})'
    assert queries() == QUERIES  # one Prometheus per region: unchanged


def test_replication_lag_is_the_beacon_gauge_of_the_target_region() -> None:
    lag = multi_region_queries("eu-central")["replication_lag_s"]
    assert lag == 'max(im_relay_replication_lag_seconds{target="eu-central"})'
    assert "im_prober_conflicts_total" in multi_region_queries("eu-central")["conflicts"]


def _done(value: object = None, error: BaseException | None = None) -> Future[dict[str, float]]:
    future: Future[dict[str, float]] = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)  # type: ignore[arg-type]
    return future


def test_home_share_lands_in_every_row_and_in_the_json() -> None:
    rows = [RegionStatus("eu-central", "primary"), RegionStatus("us-east", "secondary")]
    add_homes(rows, _done({"eu-central": 0.0, "us-east": 1.0}))
    assert [r.as_dict()["homeShare"] for r in rows] == [0.0, 1.0]
    assert rows[0].as_dict()["shardMapError"] is None


def test_without_a_shard_map_every_row_says_why() -> None:
    rows = [RegionStatus("eu-central", "primary")]
    add_homes(rows, None)
    assert rows[0].shard_map_error == NO_SHARD_MAP
    add_homes(rows, _done(error=CheckFailed("cannot reach the shard map")))
    assert rows[0].shard_map_error == "unreachable: cannot reach the shard map"
    assert rows[0].home_share is None
