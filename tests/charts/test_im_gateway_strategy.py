"""Issue 14's Kubernetes hardening in the chart: the gateway's rolling update derived from the
reconnect budget (README "Rolling updates within the reconnect budget"), and PDBs that never
evict an unhealthy pod out of budget. `helm template` with the pinned helm, no cluster."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsctl.spec import parse_spec
from opsctl.stack import _names as n
from opsctl.stack._gateway import chart_values
from tests.charts.helmkit import SCENARIOS, Helm, HelmFailed, component_name, find, scenario_file
from tests.support import shipped_spec

pytestmark = pytest.mark.integration


def _gateway(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objects, "Deployment", component_name("gateway"))


def _strategy(deployment: dict[str, Any]) -> tuple[Any, Any, int]:
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    return rolling["maxSurge"], rolling["maxUnavailable"], deployment["spec"]["minReadySeconds"]


@pytest.mark.parametrize(
    ("budget", "window", "per_pod", "surge"),
    [
        (2000, 30, 50000, 1),  # 1.2: one pod at a time
        (1000, 30, 50000, 1),  # 0.6: never below one pod (the drain window is then too short)
        (1, 30, 50000, 1),  # the smallest budget
        (2000, 60, 20000, 6),  # exactly 6
        (2001, 60, 20000, 6),  # 6.003: rounded down, never above the budget
        (1999, 60, 20000, 5),  # 5.997
        (100000, 600, 1000, 60000),  # large budgets surge wide (the HPA ceiling still binds)
    ],
)
def test_derived_surge_keeps_the_reconnect_rate_within_the_budget(
    helm: Helm, budget: int, window: int, per_pod: int, surge: int
) -> None:
    sets = {
        "gateway.strategy.reconnectsPerSecond": str(budget),
        "gateway.drainWindowSeconds": str(window),
        "gateway.autoscaling.connectionsPerPod": str(per_pod),
        "gateway.preStopSleepSeconds": "7",
    }
    max_surge, max_unavailable, min_ready = _strategy(_gateway(helm.render(sets=sets)))
    assert max_surge == surge == max(1, math.floor(budget * window / per_pod))
    assert max_unavailable == 0
    # A batch has drained (preStop + window) before the next pod is taken.
    assert min_ready == 7 + window
    if per_pod / window <= budget:
        # Drains never overlap, so the rate is maxSurge pods' worth: within the budget.
        assert max_surge * per_pod / window <= budget


def test_explicit_values_win_over_the_derivation(helm: Helm) -> None:
    sets = {"gateway.strategy.maxSurge": "25%", "gateway.strategy.minReadySeconds": "0"}
    assert _strategy(_gateway(helm.render(sets=sets))) == ("25%", 0, 0)
    sets = {"gateway.strategy.maxSurge": "3", "gateway.strategy.maxUnavailable": "1"}
    assert _strategy(_gateway(helm.render(sets=sets)))[:2] == (3, 1)


def test_a_derived_surge_with_unavailable_pods_is_refused(helm: Helm) -> None:
    with pytest.raises(HelmFailed) as failed:
        helm.render(sets={"gateway.strategy.maxUnavailable": "1"})
    assert "the derived maxSurge assumes 0" in str(failed.value)


def test_the_defaults_and_every_scenario_have_a_paced_strategy(helm: Helm) -> None:
    for values in ([], *([scenario_file(s)] for s in SCENARIOS)):
        objects = helm.render(values=values)
        max_surge, max_unavailable, min_ready = _strategy(_gateway(objects))
        assert isinstance(max_surge, int), values
        assert max_surge >= 1, values
        assert max_unavailable == 0
        config = find(objects, "ConfigMap", component_name("gateway"))
        assert min_ready >= int(config["data"]["IMGW_DRAIN_WINDOW_S"]), values


def test_builder_values_stay_within_each_regions_share_of_the_budget(
    helm: Helm, tmp_path: Path
) -> None:
    for stack in ("local", "staging", "prod"):
        spec = parse_spec(shipped_spec(stack))
        for region in spec.regions:
            values = tmp_path / f"{stack}-{region.name}.yaml"
            values.write_text(yaml.safe_dump(chart_values(spec, region)))
            max_surge, max_unavailable, min_ready = _strategy(
                _gateway(helm.render(values=[values]))
            )
            window = n.drain_window_seconds(spec, region)
            budget = n.region_reconnect_budget(spec, region)
            per_pod = region.gateway.connections_per_pod
            assert max_unavailable == 0
            assert min_ready >= window
            assert max_surge * per_pod / window <= budget, (stack, region.name)


@pytest.mark.parametrize("scenario", ["defaults", *SCENARIOS])
def test_every_pdb_evicts_unhealthy_pods_only_within_the_budget(helm: Helm, scenario: str) -> None:
    values = [] if scenario == "defaults" else [scenario_file(scenario)]
    pdbs = [o for o in helm.render(values=values) if o["kind"] == "PodDisruptionBudget"]
    if scenario != "minimal":
        assert pdbs
    for pdb in pdbs:
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "IfHealthyBudget", pdb["metadata"]
