"""Rules in git against the rules the local stack's real Prometheus has loaded."""

from __future__ import annotations

import copy

import pytest

from opsctl.alerts import ruleset
from opsctl.alerts._diff import diff
from opsctl.errors import ExitCode
from opsctl.local import LocalStack
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration


def test_the_local_stack_runs_exactly_the_rules_in_git(
    local_stack: LocalStack, opsctl: OpsctlRunner
) -> None:
    live = ("--prometheus-url", local_stack.info.prometheus_url)
    result = opsctl("alerts", "diff", "--stack", "local", *live)
    assert result.exit_code == ExitCode.OK, result.stdout + result.stderr


def test_a_changed_missing_and_extra_rule_are_each_reported(local_stack: LocalStack) -> None:
    rules = ruleset(load_stack(DEFAULT_INFRA_DIR, "local"))
    edited = copy.deepcopy(rules)
    gateway_group = edited.files["gateway.yaml"][0]
    gateway_group["rules"][0]["expr"] = 'up{job="im-gateway"} == 2'
    gateway_group["rules"].append({**gateway_group["rules"][1], "alert": "ImBrandNew"})
    removed = edited.files["redis.yaml"][0]["rules"].pop()
    found = {
        (d.change, d.rule.split("{")[0]) for d in diff(edited, local_stack.info.prometheus_url)
    }
    assert ("changed", "ImGatewayDown") in found
    assert ("missing-live", "ImBrandNew") in found
    assert ("extra-live", removed["alert"]) in found
