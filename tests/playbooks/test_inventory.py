"""`opsctl playbooks inventory`: groups and vars from the stack spec, exit 2 on bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsctl.errors import ExitCode, InvalidInputFile
from opsctl.hostlimits import load_limits
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.playbooks import GENERATED_FILE, build_inventory, default_inventory_dir
from opsctl.spec import load_stack
from tests.support import OpsctlRunner, Result

pytestmark = pytest.mark.unit


def write_stack(infra_dir: Path, mutate: Any) -> None:
    document = yaml.safe_load((DEFAULT_INFRA_DIR / "Pulumi.staging.yaml").read_text())
    spec = copy.deepcopy(document["config"]["imstack:spec"])
    mutate(spec)
    infra_dir.mkdir(exist_ok=True)
    (infra_dir / "Pulumi.candidate.yaml").write_text(
        yaml.safe_dump({"config": {"imstack:spec": spec}}, sort_keys=False)
    )


@pytest.mark.parametrize("stack", ["local", "staging", "prod"])
def test_shipped_inventories_match_their_stack_spec(stack: str) -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, stack)
    fresh = build_inventory(spec, stack, f"infra/Pulumi.{stack}.yaml", load_limits())
    committed = (default_inventory_dir(stack) / GENERATED_FILE).read_text()
    assert committed == fresh.text, f"regenerate: opsctl playbooks inventory --stack {stack}"


def test_regions_become_groups_with_budget_and_sizing_as_vars() -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, "prod")
    inventory = build_inventory(spec, "prod", "infra/Pulumi.prod.yaml", load_limits())
    top = inventory.document["all"]
    assert top["vars"]["im_reconnects_per_second"] == 5000
    region = top["children"]["region_ap_east"]
    assert region["vars"]["im_kube_context"] == "prod-ap-east"
    assert region["vars"]["im_gateway_connections_per_pod"] == 50000
    assert region["children"]["ap_east_zone_ap_east_1a"]["vars"]["im_zone"] == "ap-east-1a"
    assert "ap_east_gateway_nodes" in region["children"]
    assert set(top["children"]["gateway_nodes"]["children"]) == {
        "ap_east_gateway_nodes",
        "eu_central_gateway_nodes",
        "us_east_gateway_nodes",
    }
    assert all("-" not in name for name in inventory.groups())


def test_cli_writes_generated_yml_and_reports_json(opsctl: OpsctlRunner, tmp_path: Path) -> None:
    out = tmp_path / "inv"
    (out).mkdir()
    (out / "hosts.yml").write_text("keep: me\n")
    result = opsctl(
        "playbooks", "inventory", "--stack", "staging", "--out", str(out), "--output", "json"
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["file"] == str(out / GENERATED_FILE)
    assert "region_us_east" in report["groups"]
    generated = yaml.safe_load((out / GENERATED_FILE).read_text())
    assert generated["all"]["vars"]["im_reconnects_per_second"] == 500
    assert (out / "hosts.yml").read_text() == "keep: me\n"


def candidate_inventory(opsctl: OpsctlRunner, tmp_path: Path, mutate: Any) -> tuple[Result, Path]:
    """`playbooks inventory` of the staging spec changed by ``mutate``; the result and --out."""
    infra = tmp_path / "infra"
    write_stack(infra, mutate)
    out = tmp_path / "inv"
    inventory = ("playbooks", "inventory", "--stack", "candidate", "--out", str(out))
    return opsctl("--infra-dir", str(infra), *inventory), out


def test_cli_bad_spec_exits_2_naming_the_field(opsctl: OpsctlRunner, tmp_path: Path) -> None:
    result, out = candidate_inventory(
        opsctl, tmp_path, lambda s: s["reconnectBudget"].update(reconnectsPerSecond=0)
    )
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "reconnectBudget.reconnectsPerSecond" in result.stderr
    assert not out.exists()


def test_cli_connections_beyond_nofile_exit_2_naming_the_field(
    opsctl: OpsctlRunner, tmp_path: Path
) -> None:
    result, out = candidate_inventory(
        opsctl, tmp_path, lambda s: s["regions"][1]["gateway"].update(connectionsPerPod=2_000_000)
    )
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "regions[1].gateway.connectionsPerPod" in result.stderr
    assert "open-files limit 1048576" in result.stderr
    assert not out.exists()


def test_out_that_is_a_file_exits_2(opsctl: OpsctlRunner, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    result = opsctl("playbooks", "inventory", "--stack", "local", "--out", str(target))
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "is a file" in result.stderr


def test_limits_json_lists_both_profiles(opsctl: OpsctlRunner) -> None:
    result = opsctl("playbooks", "limits", "--output", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["loadgen_host"]["ephemeralPorts"] == [1024, 65535]
    assert data["gateway_node"]["sysctls"]["fs.nr_open"] == {"value": "2097152", "scope": "host"}


def test_build_raises_invalid_input_file_for_oversized_pods() -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, "local")
    oversized = spec.model_copy(
        update={
            "regions": [
                spec.regions[0].model_copy(
                    update={
                        "gateway": spec.regions[0].gateway.model_copy(
                            update={"connections_per_pod": 5_000_000}
                        )
                    }
                )
            ]
        }
    )
    with pytest.raises(InvalidInputFile) as caught:
        build_inventory(oversized, "local", "infra/Pulumi.local.yaml", load_limits())
    assert caught.value.problems[0].path == "regions[0].gateway.connectionsPerPod"
