"""The drill registry and the verdict's gates, on made-up figures; bad input to the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsctl.drill import (
    DRILLS,
    Accounting,
    AlertSeen,
    ExpectedAlert,
    Status,
    alert_checks,
    find,
    judge,
)
from opsctl.drill._alerts import hold_needed, unknown_alerts
from opsctl.errors import ExitCode, UserInputError
from tests.support import OpsctlRunner

pytestmark = pytest.mark.unit

CLEAN = Accounting(acked=100, delivered=100, lost=0, duplicated=0, reordered=0)
GATEWAY = find("gateway-kill")
DOWN = AlertSeen("ImGatewayDown", {"node": "gw-1", "severity": "page"}, 1000.0, False)


def test_registry_names_are_unique_and_each_drill_is_complete() -> None:
    names = [d.name for d in DRILLS]
    assert len(names) == len(set(names))
    for drill in DRILLS:
        assert drill.kubernetes
        if drill.available:
            assert drill.inject is not None
            assert drill.restore is not None
        else:
            assert drill.unavailable  # says why, never silently missing


def test_the_issues_drills_are_all_listed() -> None:
    names = {d.name for d in DRILLS}
    assert {
        "gateway-kill",
        "dispatcher-restart",
        "redis-restart-empty",
        "poison-records",
        "cassandra-down",
        "kafka-broker-down",
        "kafka-partition-leaderless",
        "pubsub-disconnect",
        "slow-reader-flood",
        "redis-failover-lost-writes",
    } <= names


def test_unknown_drill_names_the_known_ones() -> None:
    with pytest.raises(UserInputError) as caught:
        find("nope")
    assert caught.value.hint is not None
    assert "gateway-kill" in caught.value.hint


def test_clean_run_with_its_alert_passes() -> None:
    verdict = judge(GATEWAY, CLEAN, recover_s=5.0, seen=(DOWN,), state={})
    assert verdict.status is Status.PASS
    assert verdict.status.exit_code == ExitCode.OK


@pytest.mark.parametrize(
    ("accounting", "failed"),
    [
        (Accounting(100, 99, 1, 0, 0), "no acked message lost"),
        (Accounting(100, 100, 0, 1, 0), "no duplicate to a device"),
        (Accounting(100, 100, 0, 0, 0, load={"duplicated": 2}), "no duplicate to a device"),
    ],
)
def test_a_lost_or_duplicated_message_fails(accounting: Accounting, failed: str) -> None:
    verdict = judge(GATEWAY, accounting, recover_s=5.0, seen=(DOWN,), state={})
    assert verdict.status is Status.FAIL
    assert [c.name for c in verdict.checks if c.ok is False] == [failed]


def test_reordering_is_reported_not_gated() -> None:
    reordered = Accounting(100, 100, 0, 0, 3, load={"out_of_order": 1})
    verdict = judge(GATEWAY, reordered, recover_s=5.0, seen=(DOWN,), state={})
    assert verdict.status is Status.PASS
    assert verdict.accounting.total_reordered == 4


def test_no_recovery_or_a_slow_one_fails() -> None:
    assert judge(GATEWAY, CLEAN, recover_s=None, seen=(DOWN,), state={}).status is Status.FAIL
    slow = GATEWAY.max_recover_s + 1
    assert judge(GATEWAY, CLEAN, recover_s=slow, seen=(DOWN,), state={}).status is Status.FAIL


def test_too_little_load_is_inconclusive() -> None:
    verdict = judge(GATEWAY, Accounting(3, 3, 0, 0, 0), recover_s=5.0, seen=(DOWN,), state={})
    assert verdict.status is Status.INCONCLUSIVE
    assert verdict.status.exit_code == ExitCode.INCONCLUSIVE


def test_a_failed_gate_wins_over_an_undecided_one() -> None:
    verdict = judge(GATEWAY, Accounting(3, 2, 1, 0, 0), recover_s=5.0, seen=(DOWN,), state={})
    assert verdict.status is Status.FAIL


def test_expected_alert_must_fire_after_the_fault_with_its_labels() -> None:
    expected = (ExpectedAlert("ImGatewayDown", {"node": "gw-1"}),)
    other_node = AlertSeen("ImGatewayDown", {"node": "gw-2"}, 1000.0, False)
    before = AlertSeen("ImGatewayDown", {"node": "gw-1"}, 900.0, True)
    assert [c.ok for c in alert_checks(expected, (DOWN,), {})] == [True]
    assert [c.ok for c in alert_checks(expected, (other_node,), {})] == [False]
    assert [c.ok for c in alert_checks(expected, (), {})] == [False]
    # Already firing before the fault: the drill cannot tell its fault fired it.
    assert [c.ok for c in alert_checks(expected, (before,), {})] == [None]
    assert judge(GATEWAY, CLEAN, recover_s=5.0, seen=(), state={}).status is Status.FAIL


def test_labels_may_name_what_inject_chose() -> None:
    expected = ExpectedAlert("ImGatewayDown", {"node": "{gateway}"})
    assert expected.matches({"alertname": "ImGatewayDown", "node": "gw-1"}, {"gateway": "gw-1"})
    assert expected.describe({"gateway": "gw-1"}) == "ImGatewayDown{node=gw-1}"


def test_hold_covers_the_longest_for_and_unknown_alerts_are_found() -> None:
    expected = (ExpectedAlert("ImGatewayDown"), ExpectedAlert("RedisDown"))
    durations = {"ImGatewayDown": 60.0, "RedisDown": 120.0}
    assert hold_needed(expected, durations) > 120.0
    assert hold_needed((), durations) == 0.0
    assert unknown_alerts(expected, {"RedisDown": 60.0}) == ["ImGatewayDown"]


def test_every_expected_alert_has_a_rule_in_the_repository() -> None:
    import yaml

    from opsctl.paths import REPO_ROOT

    rules = {
        rule["alert"]
        for path in (REPO_ROOT / "alerts" / "rules").glob("*.yaml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    expected = {a.name for d in DRILLS for a in d.expected_alerts}
    assert expected <= rules


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("drill", "run", "nope"), "no drill 'nope'"),
        (("drill", "run", "redis-failover-lost-writes"), "cannot run on the local stack"),
        (("drill", "run", "gateway-kill", "--duration", "0"), "--duration 0"),
        (("drill", "run", "gateway-kill", "--stack", "staging"), "local stack only"),
    ],
)
def test_bad_input_exits_2_before_anything_runs(
    opsctl: OpsctlRunner, args: tuple[str, ...], words: str
) -> None:
    result = opsctl(*args)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert words in result.stderr


def test_a_stack_that_is_not_up_exits_2(opsctl: OpsctlRunner, tmp_path: Path) -> None:
    result = opsctl("drill", "run", "gateway-kill", "--state-dir", str(tmp_path / "none"))
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "no local stack" in result.stderr


def test_list_shows_every_drill_and_why_some_cannot_run(opsctl: OpsctlRunner) -> None:
    import json

    result = opsctl("drill", "list", "-o", "json")
    assert result.exit_code == ExitCode.OK
    listed = {d["name"]: d for d in json.loads(result.stdout)["drills"]}
    assert set(listed) == {d.name for d in DRILLS}
    assert listed["gateway-kill"]["expected_alerts"] == ["ImGatewayDown{node=gw-1}"]
    assert listed["redis-failover-lost-writes"]["available"] is False
    assert listed["redis-failover-lost-writes"]["unavailable"]


def test_the_hold_stops_waiting_once_each_alert_fired_or_was_already_active() -> None:
    from opsctl.drill._alerts import AlertWatch

    expected = (ExpectedAlert("ImGatewayDown", {"node": "gw-1"}),)
    watch = AlertWatch("http://127.0.0.1:9")  # never contacted here
    assert not watch.decided(expected, {})
    watch.seen[("other", 1.0)] = AlertSeen("ImGatewayDown", {"node": "gw-2"}, 1.0, False)
    assert not watch.decided(expected, {})
    watch.seen[("before", 2.0)] = AlertSeen("ImGatewayDown", {"node": "gw-1"}, 2.0, True)
    assert watch.decided(expected, {})  # already active: it cannot fire again meanwhile
    assert watch.decided((), {})
