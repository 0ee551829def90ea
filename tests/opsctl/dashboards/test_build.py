"""Dashboards are generated, templated and structurally sound for every stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from opsctl.dashboards import build_all, configmaps, expressions, structure_problems
from opsctl.errors import ExitCode
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack
from tests.support import OpsctlRunner

pytestmark = pytest.mark.unit

SERVICE_VIEWS = ("im-gateway", "im-pipeline", "im-cassandra", "im-redis")
EXPECTED = {"im-slo-overview", *SERVICE_VIEWS, "im-loadtest-run"}


@pytest.mark.parametrize("stack", ["local", "staging", "prod"])
def test_the_whole_set_builds_without_structure_problems(stack: str) -> None:
    built = build_all(load_stack(DEFAULT_INFRA_DIR, stack))
    assert set(built) == EXPECTED
    assert structure_problems(built) == []


def test_every_range_uses_rate_interval_and_every_panel_the_datasource_variable() -> None:
    built = build_all(load_stack(DEFAULT_INFRA_DIR, "local"))
    ranges = [e.expr for uid, doc in built.items() for e in expressions(uid, doc) if "[" in e.expr]
    assert ranges
    assert all("[$__rate_interval]" in expr for expr in ranges)
    for document in built.values():
        variables = {v["name"]: v for v in document["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["region"]["query"] == "label_values(up, region)"


def test_structure_check_catches_a_fixed_range_and_a_missing_variable() -> None:
    built = build_all(load_stack(DEFAULT_INFRA_DIR, "local"))
    board = built["im-redis"]
    board["panels"][0]["targets"][0]["expr"] = "rate(redis_evicted_keys_total[5m])"
    board["templating"]["list"] = [v for v in board["templating"]["list"] if v["name"] != "region"]
    problems = structure_problems({"im-redis": board})
    assert "im-redis: missing the $region variable" in problems
    assert any("use [$__rate_interval] in ranges" in p for p in problems)


def test_slo_burn_rates_divide_by_the_budget_from_the_spec() -> None:
    board = build_all(load_stack(DEFAULT_INFRA_DIR, "prod"))["im-slo-overview"]
    exprs = [e.expr for e in expressions("im-slo-overview", board)]
    assert 'im:slo_errors:ratio_rate1h{slo="availability"} / 0.0005' in exprs  # 99.95%
    assert 'im:slo_errors:ratio_rate1h{slo="connect-success"} / 0.001' in exprs  # 99.9%


def test_configmaps_carry_the_grafana_sidecar_label() -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, "staging")
    built = build_all(spec)
    maps = configmaps(spec, spec.regions[1], built)
    assert len(maps) == len(EXPECTED)
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["labels"]["im.platform/region"] == "us-east"
        (document,) = config_map["data"].values()
        assert json.loads(document)["uid"] in EXPECTED


def test_build_and_render_through_the_cli(opsctl: OpsctlRunner, tmp_path: Path) -> None:
    result = opsctl("dashboards", "build", "--stack", "prod", "--out", str(tmp_path / "json"))
    assert result.exit_code == ExitCode.OK, result.stderr
    assert sorted(p.stem for p in (tmp_path / "json").glob("*.json")) == sorted(EXPECTED)
    result = opsctl("dashboards", "render", "--stack", "prod", "--out", str(tmp_path / "cm"))
    assert result.exit_code == ExitCode.OK, result.stderr
    documents = list(
        yaml.safe_load_all((tmp_path / "cm" / "ap-east" / "dashboards.yaml").read_text())
    )
    assert {d["kind"] for d in documents} == {"ConfigMap"}


def test_live_lint_of_an_unreachable_prometheus_fails_naming_it() -> None:
    from opsctl.dashboards import live_problems
    from opsctl.loadtest.targets import free_port
    from opsctl.prometheus import PrometheusUnreachable

    built = build_all(load_stack(DEFAULT_INFRA_DIR, "local"))
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PrometheusUnreachable) as raised:
        live_problems(built, nowhere, timeout_s=2)
    assert raised.value.exit_code is ExitCode.FAILED
    assert nowhere in raised.value.message
