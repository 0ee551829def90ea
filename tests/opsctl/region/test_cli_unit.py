"""opsctl region's edge, without a stack: bad input exits 2 before anything is reached, a
missing local stack is named, and the JSON outcome's shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsctl.region import Outcome
from tests.support import OpsctlRunner

pytestmark = pytest.mark.unit


def test_an_unknown_region_exits_2_naming_the_stacks_regions(
    opsctl: OpsctlRunner, tmp_path: Path
) -> None:
    result = opsctl(
        "region", "evacuate", "mars", "--stack", "staging", "--state-dir", str(tmp_path)
    )
    assert result.exit_code == 2
    assert "unknown region 'mars': stack 'staging' has eu-central, us-east" in result.stderr
    assert result.stdout == ""


def test_no_local_stack_is_named_with_how_to_start_one(
    opsctl: OpsctlRunner, tmp_path: Path
) -> None:
    result = opsctl(
        "region", "restore", "eu-central", "--stack", "staging", "--state-dir", str(tmp_path)
    )
    assert result.exit_code == 1
    assert f"no local stack in {tmp_path}" in result.stderr
    assert "opsctl local up" in result.stderr


def test_a_batch_below_one_is_a_usage_error(opsctl: OpsctlRunner, tmp_path: Path) -> None:
    result = opsctl(
        "region",
        "evacuate",
        "eu-central",
        "--batch",
        "0",
        "--stack",
        "staging",
        "--state-dir",
        str(tmp_path),
    )
    assert result.exit_code == 2


def test_help_lists_both_commands_and_the_defaults(opsctl: OpsctlRunner) -> None:
    result = opsctl("region", "evacuate", "--help")
    assert result.exit_code == 0
    assert "--unreachable" in result.stdout
    assert "[default: 512]" in result.stdout
    listing = opsctl("region", "--help")
    assert "evacuate" in listing.stdout
    assert "restore" in listing.stdout


def test_the_outcome_says_what_is_left() -> None:
    outcome = Outcome("evacuate", "eu-central", "planned", epoch_before=3, shards_planned=10)
    outcome.left = {"shards_homed_in_region": 4}
    data = outcome.as_dict()
    assert data["complete"] is False
    assert data["left"] == {"shards_homed_in_region": 4}
    assert data["reconciled"] == {"held": 0, "already_sequenced": 0, "sequenced": 0}
    outcome.add_reconciled({"held": 2, "sequenced": 1, "already_sequenced": 1})
    outcome.add_reconciled({"held": 1, "sequenced": 1, "already_sequenced": 0})
    assert outcome.reconciled == {"held": 3, "already_sequenced": 1, "sequenced": 2}


def test_cluster_flags_without_cluster_and_a_cluster_run_without_the_map_exit_2(
    opsctl: OpsctlRunner, tmp_path: Path
) -> None:
    base = ["region", "evacuate", "eu-central", "--stack", "staging", "--state-dir", str(tmp_path)]
    local = opsctl(*base, "--cassandra", "db:9042", "--sessions-per-pod", "10")
    assert local.exit_code == 2
    assert "--cassandra, --sessions-per-pod: only with --cluster" in local.stderr
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    cluster = opsctl(*base, "--cluster", "--kubeconfig", str(kubeconfig))
    assert cluster.exit_code == 2
    assert "--cassandra: where is the shard map?" in cluster.stderr
    bad = opsctl(*base, "--cluster", "--cassandra", "mars=db:9042")
    assert bad.exit_code == 2
    assert "unknown region 'mars'" in bad.stderr
    assert opsctl("region", "--help").exit_code == 0
    assert "--cluster" in opsctl("region", "evacuate", "--help").stdout
