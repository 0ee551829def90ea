"""The drain window has one home: each region's comes from the spec, and the rollout drains,
paces and waits with exactly the number the stack builders put in that region's chart."""

from __future__ import annotations

import math

import pytest

from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.rollout import StartRequest, build_plan, rolling_strategy
from opsctl.rollout._plan import batch_size, pods_per_batch
from opsctl.spec import StackSpec, list_stacks, load_stack
from opsctl.stack import build_stack
from opsctl.stack._names import GATEWAY_RELEASE

pytestmark = pytest.mark.unit
STACKS = list_stacks(DEFAULT_INFRA_DIR)
PROMETHEUS = ("http://p:9090",)


def chart_drain_windows(spec: StackSpec) -> dict[str, int]:
    """Each region's ``gateway.drainWindowSeconds``, read from the chart the builders render."""
    windows: dict[str, int] = {}
    for plan in build_stack(spec, dashboards=[]).regions:
        (chart,) = [
            chart
            for component in plan.components
            for chart in component.charts
            if chart.name == GATEWAY_RELEASE
        ]
        windows[plan.region.name] = chart.values["gateway"]["drainWindowSeconds"]
    return windows


def test_every_shipped_stack_is_checked() -> None:
    assert {"local", "staging", "prod"} <= set(STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_the_rollout_drains_each_region_for_the_window_its_chart_gets(stack: str) -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, stack)
    chart = chart_drain_windows(spec)
    plan = build_plan(spec, StartRequest(stack=stack, image="0.3.1", prometheus=PROMETHEUS))
    assert {region.name: region.drain_window_s for region in plan.regions} == chart
    for region in plan.regions:
        replicas = spec.region(region.name).gateway.replicas
        pacing = rolling_strategy(plan, region, replicas)
        # The Deployment holds each batch for the chart's window before the next one goes.
        assert pacing["minReadySeconds"] == chart[region.name]
        window = float(chart[region.name])
        expected = batch_size(plan.reconnect_budget, region.connections_per_pod, window, replicas)
        assert pods_per_batch(plan, region, replicas) == expected


def test_staging_regions_get_their_own_windows_and_batches() -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, "staging")
    plan = build_plan(spec, StartRequest(stack="staging", image="0.3.1", prometheus=PROMETHEUS))
    primary, secondary = plan.regions
    assert (primary.name, primary.drain_window_s) == ("eu-central", 90.0)
    assert (secondary.name, secondary.drain_window_s) == ("us-east", 100.0)
    assert rolling_strategy(plan, primary, 3)["minReadySeconds"] == 90
    assert rolling_strategy(plan, secondary, 3)["minReadySeconds"] == 100
    # 500 reconnects/s; 25000 connections a pod over 0.8 x 90 s = 347/s: one pod at a time.
    assert pods_per_batch(plan, primary, 3) == 1
    assert math.floor(500 / (25000 / (0.8 * 90))) == 1


def test_an_explicit_drain_window_overrides_every_region() -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, "prod")
    request = StartRequest(stack="prod", image="0.3.1", drain_window="2m", prometheus=PROMETHEUS)
    plan = build_plan(spec, request)
    assert [region.drain_window_s for region in plan.regions] == [120.0, 120.0, 120.0]
    assert {rolling_strategy(plan, r, 40)["minReadySeconds"] for r in plan.regions} == {120}
