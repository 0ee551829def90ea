"""opsctl cluster input handling through the CLI edge: bad input exits 2, missing tools fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opsctl.errors import ExitCode
from tests.support import OpsctlRunner

pytestmark = pytest.mark.unit


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPSCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPSCTL_CLUSTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("OPSCTL_NO_TOOL_BUILD", "1")  # fail with the hint, never start a build
    return tmp_path


def test_unsupported_region_count_exits_2(opsctl: OpsctlRunner, empty_cache: Path) -> None:
    result = opsctl("cluster", "up", "--regions", "5")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "--regions 5 is not supported" in result.stderr
    assert not (empty_cache / "state").exists()


def test_stack_with_regions_exits_2(opsctl: OpsctlRunner, empty_cache: Path) -> None:
    result = opsctl("cluster", "up", "--stack", "prod", "--regions", "2")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "either --stack or --regions" in result.stderr


def test_bad_nodes_per_zone_exits_2(opsctl: OpsctlRunner, empty_cache: Path) -> None:
    result = opsctl("cluster", "up", "--nodes-per-zone", "0")
    assert result.exit_code == ExitCode.BAD_INPUT


def test_unknown_stack_exits_2(opsctl: OpsctlRunner, empty_cache: Path) -> None:
    result = opsctl("cluster", "up", "--stack", "qa")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "stack 'qa' not found" in result.stderr


def test_missing_binaries_fail_with_make_setup(opsctl: OpsctlRunner, empty_cache: Path) -> None:
    result = opsctl("cluster", "up")
    assert result.exit_code == ExitCode.FAILED  # ToolMissing
    assert "not built yet" in result.stderr
    assert "make setup" in result.stderr
    assert not (empty_cache / "state" / "clusters").exists()


def test_status_with_no_clusters_is_empty_json(opsctl: OpsctlRunner, empty_cache: Path) -> None:
    result = opsctl("cluster", "status", "--output", "json")
    assert result.exit_code == ExitCode.OK
    assert json.loads(result.stdout)["clusters"] == []


def test_down_with_no_clusters_is_a_no_op(opsctl: OpsctlRunner, empty_cache: Path) -> None:
    result = opsctl("-o", "json", "cluster", "down")
    assert result.exit_code == ExitCode.OK
    assert json.loads(result.stdout)["deleted"] == []
