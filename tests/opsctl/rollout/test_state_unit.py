"""What a rollout keeps in the cluster: its phases as stored strings, and plans written by
earlier opsctl versions, which must still resume (or be refused clearly)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from opsctl.errors import CheckFailed
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.rollout import Driver, Phase, RolloutPlan, RolloutRecord, StartRequest, build_plan
from opsctl.rollout._analysis import Metrics
from opsctl.rollout._kube import KubeApi
from opsctl.rollout._plan import PLAN_FORMAT, RegionTarget
from opsctl.rollout._state import (
    REGION_FINISHED_PHASES,
    REGION_PHASES,
    ROLLOUT_PHASES,
    TERMINAL_PHASES,
    RegionProgress,
)
from opsctl.spec import load_stack
from tests.opsctl.rollout.harness import NEW_IMAGE
from tests.opsctl.rollout.test_driver_unit import NS, FakeKube, FakeMetrics

pytestmark = pytest.mark.unit


def test_phases_are_stored_as_the_same_strings() -> None:
    stored = "pending canary promoting draining baking done running paused succeeded"
    assert [str(phase) for phase in Phase] == [*stored.split(), "rolled_back", "aborted", "undone"]
    assert json.dumps({"phase": Phase.ROLLED_BACK}) == '{"phase": "rolled_back"}'
    assert Phase.PAUSED == "paused"  # what opsctl/cli/rollout.py compares reports with
    assert {"succeeded", "rolled_back", "aborted", "undone"} == TERMINAL_PHASES
    assert {"done", "rolled_back", "aborted", "undone"} == REGION_FINISHED_PHASES
    assert TERMINAL_PHASES < ROLLOUT_PHASES
    assert REGION_FINISHED_PHASES < REGION_PHASES


def test_an_unknown_stored_phase_is_refused_by_name() -> None:
    with pytest.raises(CheckFailed, match="unknown phase 'exploded'"):
        RolloutRecord.from_json({"plan": {"id": "r1"}, "phase": "exploded"})
    with pytest.raises(CheckFailed, match="unknown phase 'running'"):  # not a region's phase
        RegionProgress.from_json({"rollout_id": "r1", "region": "local", "phase": "running"})
    record = RolloutRecord.from_json({"plan": {"id": "r1"}, "phase": "paused"})
    assert record.phase is Phase.PAUSED


def local_plan(**overrides: Any) -> RolloutPlan:
    spec = load_stack(DEFAULT_INFRA_DIR, "local")
    values = {"steps": "50,100", "interval": "10ms", "bake": "10ms", "namespace": NS}
    request = StartRequest(
        stack="local", image=NEW_IMAGE, prometheus=("http://127.0.0.1:9",), **values, **overrides
    )
    return build_plan(spec, request)


def format_1(plan: RolloutPlan, drain_window_s: float) -> dict[str, Any]:
    """The plan as opsctl stored it before drain windows were per region."""
    stored = copy.deepcopy(plan.to_json())
    del stored["format"]
    stored["drain_window_s"] = drain_window_s
    for region in stored["regions"]:
        del region["drain_window_s"]
    return stored


def test_a_plan_round_trips_through_its_json() -> None:
    plan = local_plan()
    assert plan.format == PLAN_FORMAT
    assert RolloutPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


def test_a_format_1_plan_keeps_the_window_it_started_with_in_every_region() -> None:
    plan = local_plan()
    assert plan.regions[0].drain_window_s == 50.0  # the local chart's window
    loaded = RolloutPlan.from_json(format_1(plan, 30.0))
    assert [region.drain_window_s for region in loaded.regions] == [30.0]
    assert loaded.format == PLAN_FORMAT


def test_a_newer_or_damaged_plan_is_refused_clearly() -> None:
    stored = local_plan().to_json()
    with pytest.raises(CheckFailed, match=f"this opsctl reads formats 1 to {PLAN_FORMAT}"):
        RolloutPlan.from_json({**stored, "format": PLAN_FORMAT + 1})
    with pytest.raises(CheckFailed, match="cannot be read"):
        RolloutPlan.from_json({**stored, "surprise": 1})
    old = format_1(local_plan(), 30.0)
    del old["drain_window_s"]
    with pytest.raises(CheckFailed, match="cannot be read"):
        RolloutPlan.from_json(old)


def test_a_rollout_started_before_the_change_resumes_with_its_own_window() -> None:
    kube = FakeKube()
    plan = local_plan(drain_window="3s")
    record = RolloutRecord(plan=format_1(plan, 1.0), phase=Phase.PAUSED)

    def connect(target: RegionTarget) -> tuple[KubeApi, Metrics | None]:
        return kube, FakeMetrics()

    outcome = Driver(RolloutPlan.from_json(record.plan), connect, poll_s=0.001).resume(record)
    assert outcome.phase is Phase.SUCCEEDED, outcome.reason
    promote = next(
        body
        for verb, name, body, _ in kube.deployment_calls()
        if verb == "patch" and name == "im-gateway-gateway" and "spec" in body
    )
    assert promote["spec"]["minReadySeconds"] == 1  # the stored 1 s, not 3 s or the spec's 50 s
    stored = json.loads(
        kube.objects[("configmaps", "opsctl-rollout-gateway")]["data"]["rollout.json"]
    )
    assert stored["phase"] == "succeeded"
    assert "format" not in stored["plan"]  # the record is left as it was written
