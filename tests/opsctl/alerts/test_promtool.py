"""The real promtool and amtool (Debian packages) judge the rules, the tests and the routing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from opsctl import alerts
from opsctl.alerts import RULES_DIR
from opsctl.errors import ExitCode, InvalidInputFile
from opsctl.local import LocalStack
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack, parse_spec
from tests.support import OpsctlRunner, require_tool, shipped_spec

pytestmark = pytest.mark.integration

ANNOTATIONS = {
    "summary": "s",
    "description": "d",
    "runbook_url": "https://runbooks.im.internal/gateway-down",
}


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_tool("promtool")
    require_tool("amtool")


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES_DIR, target)
    return target


def add_rule(directory: Path, rule: dict[str, object], file: str = "extra.yaml") -> None:
    (directory / file).write_text(yaml.safe_dump({"groups": [{"name": "extra", "rules": [rule]}]}))


def alert(
    name: str,
    expr: str = "vector(1)",
    *,
    severity: str = "ticket",
    team: str = "im-platform",
    annotations: dict[str, str] = ANNOTATIONS,
) -> dict[str, object]:
    """An alert rule in group 'extra', complete unless the test says otherwise."""
    labels = {"severity": severity, "team": team}
    return {"alert": name, "expr": expr, "labels": labels, "annotations": annotations}


@pytest.mark.parametrize("stack", ["local", "staging", "prod"])
def test_every_stack_passes_promtool_and_amtool(opsctl: OpsctlRunner, stack: str) -> None:
    result = opsctl("alerts", "lint", "--stack", stack)
    assert result.exit_code == ExitCode.OK, result.stderr
    assert "6 rule files pass promtool lint" in result.stderr


def test_every_promtool_unit_test_passes(opsctl: OpsctlRunner) -> None:
    result = opsctl("alerts", "test", "--stack", "local", "-o", "json")
    assert result.exit_code == ExitCode.OK, result.stderr
    assert "slo.test.yaml" in result.stdout


@pytest.mark.parametrize("stack", ["local", "staging", "prod"])
def test_coverage_gate_passes_for_shipped_stacks(stack: str) -> None:
    assert alerts.coverage(load_stack(DEFAULT_INFRA_DIR, stack)) == []


def test_coverage_gate_names_an_untested_alert(opsctl: OpsctlRunner, rules_copy: Path) -> None:
    add_rule(rules_copy, alert("ImUntested"))
    result = opsctl("alerts", "coverage", "--rules-dir", str(rules_copy))
    assert result.exit_code == ExitCode.FAILED
    assert "alert ImUntested (extra.yaml) has no promtool test" in result.stderr


def test_coverage_gate_names_a_team_that_routes_nowhere(rules_copy: Path) -> None:
    add_rule(rules_copy, alert("ImOrphan", severity="page", team="im-nobody"))
    gaps = alerts.coverage(load_stack(DEFAULT_INFRA_DIR, "local"), rules_copy)
    assert "team 'im-nobody' (severity page) is not in the spec's alert routing" in gaps


def test_coverage_gate_names_a_pair_that_falls_through_to_the_fallback() -> None:
    data = shipped_spec("local")
    data["alerting"]["teams"] = [t for t in data["alerting"]["teams"] if t["name"] != "im-data"]
    gaps = alerts.coverage(parse_spec(data))
    assert any("team 'im-data'" in gap for gap in gaps), gaps


def test_promql_syntax_error_names_file_group_and_rule(
    opsctl: OpsctlRunner, rules_copy: Path
) -> None:
    broken = alert("ImBroken", "sum(rate(up[5m]) by", severity="page")
    add_rule(rules_copy, broken, file="broken.yaml")
    with pytest.raises(InvalidInputFile) as caught:
        alerts.lint(load_stack(DEFAULT_INFRA_DIR, "local"), rules_copy)
    (problem,) = caught.value.problems
    assert problem.file.endswith("broken.yaml")
    assert problem.path == "group 'extra', rule 'ImBroken'"
    result = opsctl("alerts", "lint", "--rules-dir", str(rules_copy))
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "broken.yaml" in result.stderr
    assert "ImBroken" in result.stderr


def test_missing_annotation_exits_2_before_promtool_runs(
    opsctl: OpsctlRunner, rules_copy: Path
) -> None:
    add_rule(rules_copy, alert("ImVague", severity="page", annotations={"summary": "s"}))
    result = opsctl("alerts", "lint", "--rules-dir", str(rules_copy))
    assert result.exit_code == ExitCode.BAD_INPUT
    assert (
        "group 'extra', alert 'ImVague': missing required annotation 'description'" in result.stderr
    )


def test_render_labels_rules_for_kube_prometheus_stack(
    opsctl: OpsctlRunner, tmp_path: Path
) -> None:
    result = opsctl("alerts", "render", "--stack", "prod", "--out", str(tmp_path), "-o", "json")
    assert result.exit_code == ExitCode.OK, result.stderr
    for region in ("ap-east", "eu-central", "us-east"):
        documents = list(
            yaml.safe_load_all((tmp_path / region / "prometheusrules.yaml").read_text())
        )
        assert {d["kind"] for d in documents} == {"PrometheusRule"}
        assert all(d["metadata"]["labels"]["release"] == "kube-prometheus-stack" for d in documents)
        assert all(d["metadata"]["labels"]["im.platform/region"] == region for d in documents)
        assert "im-slo" in {d["metadata"]["name"] for d in documents}


def test_render_refuses_an_unknown_region(opsctl: OpsctlRunner, tmp_path: Path) -> None:
    result = opsctl(
        "alerts", "render", "--stack", "prod", "--region", "mars", "--out", str(tmp_path)
    )
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "--region: 'mars' is not a region of 'prod'" in result.stderr
    assert not any(tmp_path.iterdir())


def test_a_rule_using_a_metric_the_live_stack_does_not_expose_exits_2(
    opsctl: OpsctlRunner, rules_copy: Path, local_stack: LocalStack
) -> None:
    add_rule(rules_copy, alert("ImGhost", "im_gateway_ghost_total > 0"), file="ghost.yaml")
    live = ("--prometheus-url", local_stack.info.prometheus_url)
    result = opsctl("alerts", "lint", "--rules-dir", str(rules_copy), *live)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "ghost.yaml" in result.stderr
    assert "alert ImGhost: metric im_gateway_ghost_total is not exposed" in result.stderr
