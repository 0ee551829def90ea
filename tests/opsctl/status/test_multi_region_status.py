"""opsctl status on the real multi-region stack (staging, the session's
``multi_region_stack``): per region, the home share from the shard map, the cross-region
replication lag from the relays' beacons, and conflicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opsctl.local import LocalStack
from tests.opsctl.region.conftest import REGIONS, original_share
from tests.support import OpsctlRunner, wait_for

pytestmark = pytest.mark.integration


def _rows(
    opsctl: OpsctlRunner, stack: LocalStack, kubeconfig: Path
) -> dict[str, dict[str, object]]:
    state = str(stack.config.state_dir)
    result = opsctl(
        "status",
        "--stack",
        "staging",
        "--state-dir",
        state,
        "--kubeconfig",
        str(kubeconfig),
        "-o",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    return {row["region"]: row for row in json.loads(result.stdout)}


def test_status_shows_home_share_replication_lag_and_conflicts_per_region(
    multi_region_stack: LocalStack,
    opsctl: OpsctlRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = tmp_path / "kubeconfig"  # no clusters: the local stack is the only source
    empty.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")

    def flowing() -> dict[str, dict[str, object]] | None:
        rows = _rows(opsctl, multi_region_stack, empty)
        lags = [r["replication_lag_s"] for r in rows.values()]
        conflicts = [r["conflicts"] for r in rows.values()]
        # Before the first beacon the lag is the time since the relay started: it grows.
        beacons = all(isinstance(lag, float) and lag < 30 for lag in lags)
        return rows if beacons and None not in conflicts else None

    # The relays' beacons arrive once a second after MirrorMaker 2 mirrored the first ones.
    rows = wait_for("beacons and the prober in every row", flowing, timeout=120, interval=2)
    assert list(rows) == list(REGIONS)
    for region, row in rows.items():
        assert row["shardMapError"] is None
        assert row["homeShare"] == original_share()[region]
        lag = row["replication_lag_s"]
        assert isinstance(lag, float)
        assert 0 <= lag < 30
        # The relays' conflict probers export it: 0, and it must stay so.
        assert row["conflicts"] == 0
        assert row["prometheusError"] is None
        assert row["connections"] is not None  # this region's series of the shared Prometheus
    assert sum(r["homeShare"] for r in rows.values()) == pytest.approx(1.0)  # type: ignore[misc]

    monkeypatch.setenv("COLUMNS", "240")  # wide enough that no header folds
    table = opsctl(
        "status",
        "--stack",
        "staging",
        "--state-dir",
        str(multi_region_stack.config.state_dir),
        "--kubeconfig",
        str(empty),
    )
    assert table.exit_code == 0, table.stderr
    for column in ("homes", "repl lag", "conflicts"):
        assert column in table.stdout
    assert f"{original_share()['us-east']:.1%}" in table.stdout
