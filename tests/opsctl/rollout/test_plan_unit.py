"""Plan validation, batch sizing and the per-signal verdicts: pure logic."""

from __future__ import annotations

import math

import pytest

from opsctl.errors import UserInputError
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.rollout import StartRequest, batch_size, build_plan, canary_replicas, parse_steps
from opsctl.rollout._analysis import GATEWAY_SIGNALS, combine, judge
from opsctl.rollout._plan import Thresholds, select_regions
from opsctl.spec import load_stack

pytestmark = pytest.mark.unit
THRESHOLDS = Thresholds(250.0, 0.001, 0.995, 1000.0, 0.2, 1.0)
P99, ERRORS, _, CONNECTS = GATEWAY_SIGNALS


def test_steps_must_increase_and_end_in_promotion() -> None:
    assert parse_steps("5,25,50") == (5, 25, 50, 100)
    assert parse_steps("100") == (100,)
    for bad in ("", "0,50", "50,50", "25,5", "a,100", "150"):
        with pytest.raises(UserInputError):
            parse_steps(bad)


def test_waves_put_the_primary_first_and_unknown_regions_are_refused() -> None:
    prod = load_stack(DEFAULT_INFRA_DIR, "prod")
    assert select_regions(prod, "all") == ["ap-east", "eu-central", "us-east"]
    assert select_regions(prod, "us-east,ap-east") == ["ap-east", "us-east"]
    with pytest.raises(UserInputError, match="unknown region 'mars'"):
        select_regions(prod, "mars")


def test_a_bare_tag_uses_the_spec_repository() -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, "local")
    request = StartRequest(stack="local", image="0.3.1", prometheus=("http://p:9090",))
    plan = build_plan(spec, request)
    assert plan.image == "registry.im.internal/im/gateway:0.3.1"
    assert plan.thresholds.send_error_ratio == pytest.approx(0.001)
    with pytest.raises(UserInputError, match="no Prometheus URL"):
        build_plan(spec, StartRequest(stack="local", image="0.3.1"))
    with pytest.raises(UserInputError, match="shorter than the analysis interval"):
        build_plan(
            spec,
            StartRequest(
                stack="local",
                image="0.3.1",
                bake="30s",
                interval="1m",
                prometheus=("http://p:9090",),
            ),
        )


def test_batches_keep_reconnects_within_the_budget() -> None:
    # prod: 5000 reconnects/s, 50000 connections a pod drained over 0.8 x 30 s.
    assert batch_size(5000, 50000, 30.0, 40) == 2
    assert 2 * 50000 / (0.8 * 30) <= 5000 < 3 * 50000 / (0.8 * 30)
    assert batch_size(200, 10000, 30.0, 4) == 1  # never zero: progress needs one pod
    assert batch_size(10**6, 100, 30.0, 3) == 3  # never more than the Deployment has
    assert canary_replicas(40, 5) == 2
    assert canary_replicas(3, 5) == 1


def test_judge_needs_samples_data_slo_and_baseline() -> None:
    assert judge(P99, THRESHOLDS, 50, (40.0, 500.0), (38.0, 900.0)).verdict == "pass"
    few = judge(P99, THRESHOLDS, 50, (40.0, 10.0), (38.0, 900.0))
    assert few.verdict == "inconclusive"
    assert "fewer than 50" in few.reason
    assert judge(P99, THRESHOLDS, 50, (math.nan, 500.0), (38.0, 900.0)).verdict == "inconclusive"
    assert judge(P99, THRESHOLDS, 50, (None, None), (38.0, 900.0)).verdict == "inconclusive"
    assert judge(P99, THRESHOLDS, 50, (260.0, 500.0), (38.0, 900.0)).verdict == "fail"
    worse = judge(P99, THRESHOLDS, 50, (120.0, 500.0), (40.0, 900.0))  # within SLO, 3x stable
    assert worse.verdict == "fail"
    assert "worse than stable" in worse.reason
    assert judge(CONNECTS, THRESHOLDS, 50, (0.99, 500.0), None).verdict == "fail"
    assert judge(ERRORS, THRESHOLDS, 50, (0.0, 500.0), (0.0, 500.0)).verdict == "pass"
    results = [
        judge(P99, THRESHOLDS, 50, (40.0, 10.0), None),
        judge(P99, THRESHOLDS, 50, (400.0, 500.0), None),
    ]
    assert combine(results) == "fail"


def test_dispatchers_go_one_at_a_time_on_their_own_signals() -> None:
    from opsctl.rollout import rolling_strategy
    from opsctl.rollout._analysis import DISPATCHER_SIGNALS, LAG_SIGNAL, signals_for

    spec = load_stack(DEFAULT_INFRA_DIR, "prod")
    request = StartRequest(
        stack="prod", image="0.3.1", component="dispatcher", prometheus=("http://p:9090",)
    )
    plan = build_plan(spec, request)
    assert plan.image == "registry.im.internal/im/dispatcher:0.3.1"
    assert plan.deployment == "im-gateway-dispatcher"
    # A gateway batch in prod would be 2 pods (budget); a dispatcher rebalances, so 1.
    assert rolling_strategy(plan, plan.regions[0], 40) == {
        "minReadySeconds": 30,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
    }
    own, other = signals_for("dispatcher")
    assert [signal.name for signal in own] == ["consumer_lag", "batch_failure_ratio"]
    assert other == GATEWAY_SIGNALS
    assert signals_for("gateway") == (GATEWAY_SIGNALS, (LAG_SIGNAL,))
    batch_failures = DISPATCHER_SIGNALS[1]
    assert judge(batch_failures, THRESHOLDS, 20, (0.2, 400.0), (0.0, 400.0)).verdict == "fail"
    assert judge(batch_failures, THRESHOLDS, 20, (0.0, 400.0), (0.0, 400.0)).verdict == "pass"
