"""opsctl spec validate | show | regions, through the CLI edge (exit codes, streams)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opsctl.errors import ExitCode
from tests.support import OpsctlRunner, SpecWriter, shipped_spec

pytestmark = pytest.mark.unit


def test_validate_prod_exits_0(opsctl: OpsctlRunner) -> None:
    result = opsctl("spec", "validate", "--stack", "prod")
    assert result.exit_code == ExitCode.OK
    assert "stack 'prod' is valid (ap-east, eu-central, us-east)" in result.stderr
    assert result.stdout == ""


def test_show_json_prints_the_whole_spec_on_stdout(opsctl: OpsctlRunner) -> None:
    result = opsctl("spec", "show", "--stack", "prod", "--output", "json")
    assert result.exit_code == ExitCode.OK
    assert json.loads(result.stdout) == shipped_spec("prod")


def test_show_table_summarises_every_region(opsctl: OpsctlRunner) -> None:
    result = opsctl("spec", "show", "--stack", "staging")
    assert result.exit_code == ExitCode.OK
    for text in (
        "eu-central",
        "us-east",
        "delivery p99",
        "sizing per region",
        "alert routing",
    ):
        assert text in result.stdout


def test_regions_json_reports_capacity_and_headroom(opsctl: OpsctlRunner) -> None:
    result = opsctl("-o", "json", "spec", "regions", "--stack", "prod")
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == ["ap-east", "eu-central", "us-east"]
    assert rows[0]["gatewayCapacity"] == 60 * 50_000
    assert rows[0]["headroomPercent"] == pytest.approx(33.3)


def test_bad_spec_exits_2_naming_file_field_and_problem(
    opsctl: OpsctlRunner, infra_dir: Path, write_spec: SpecWriter
) -> None:
    spec = shipped_spec("local")
    spec["regions"][0]["gateway"]["replicas"] = 7
    write_spec(spec)
    result = opsctl("--infra-dir", str(infra_dir), "spec", "validate", "--stack", "candidate")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "Pulumi.candidate.yaml: 1 problem in stack spec" in result.stderr
    assert "regions[0].gateway.replicas: 7 is greater than maxReplicas (4)" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_verbose_shows_the_traceback_of_a_user_error(opsctl: OpsctlRunner) -> None:
    result = opsctl("-v", "spec", "validate", "--stack", "missing")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "Traceback" in result.stderr
    assert "stacks available: local, prod, staging" in result.stderr


def test_missing_stack_lists_available_stacks(opsctl: OpsctlRunner) -> None:
    result = opsctl("spec", "show", "--stack", "qa")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "stack 'qa' not found" in result.stderr
    assert "stacks available: local, prod, staging" in result.stderr
    assert "Traceback" not in result.stderr


def test_stack_from_environment(opsctl: OpsctlRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCTL_STACK", "staging")
    result = opsctl("spec", "validate")
    assert "stack 'staging' is valid" in result.stderr
