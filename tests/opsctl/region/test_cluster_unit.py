"""The cluster drain's pacing and plan (opsctl.region._plan) and its steps against a recording
fake of the Kubernetes API with a fake clock (opsctl.region._cluster): no cluster here; the
real one is test_region_cluster.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from opsctl.errors import UserInputError
from opsctl.paths import DEFAULT_INFRA_DIR, REPO_ROOT
from opsctl.region import NullProgress
from opsctl.region._cluster import ANNOTATION, API_VERBS, ClusterRegions, parse_endpoints
from opsctl.region._plan import pdb_max_unavailable, pods_per_step, scale_steps
from opsctl.spec import load_stack

pytestmark = pytest.mark.unit

GATEWAY = "im-gateway-gateway"


def test_a_step_takes_what_drains_together_within_the_budget_capped_by_the_pdb() -> None:
    # 1000 sessions over 80 % of a 10 s window: 125/s a pod; 500/s fit 4 pods at once.
    assert pods_per_step(500, 10, 1000) == 4
    assert pods_per_step(500, 10, 1000, max_unavailable=1) == 1
    assert pods_per_step(500, 1, 25_000) == 1  # never less than one pod
    assert pods_per_step(500, 10, 0, max_unavailable=2) == 2  # no sessions: the PDB's pace
    with pytest.raises(ValueError, match="budget"):
        pods_per_step(0, 10, 1)


def test_the_steps_go_from_the_replicas_found_down_to_zero() -> None:
    assert scale_steps(3, 1) == [2, 1, 0]
    assert scale_steps(5, 2) == [3, 1, 0]
    assert scale_steps(2, 4) == [0]
    assert scale_steps(0, 1) == []  # drained already
    with pytest.raises(ValueError, match="at least one pod"):
        scale_steps(3, 0)


def test_the_pdb_arithmetic_is_the_disruption_controllers() -> None:
    assert pdb_max_unavailable(None, 4) is None
    assert pdb_max_unavailable({"maxUnavailable": 1}, 4) == 1
    assert pdb_max_unavailable({"maxUnavailable": "30%"}, 4) == 2  # rounded up
    assert pdb_max_unavailable({"minAvailable": 3}, 4) == 1
    assert pdb_max_unavailable({"minAvailable": "50%"}, 5) == 2  # 3 must stay
    assert pdb_max_unavailable({"minAvailable": 5}, 4) == 0


def test_endpoints_per_region_or_for_all_and_bad_ones_named() -> None:
    regions = ["eu-central", "us-east"]
    got = parse_endpoints(["eu-central=a:9042,b:9042", "c:9042"], regions, "--cassandra")
    assert got == {"eu-central": ["a:9042", "b:9042"], "us-east": ["c:9042"]}
    with pytest.raises(UserInputError, match="unknown region 'mars'"):
        parse_endpoints(["mars=a:1"], regions, "--cassandra")
    with pytest.raises(UserInputError, match="'a' is not HOST:PORT"):
        parse_endpoints(["eu-central=a"], regions, "--cassandra")


def test_the_shipped_role_grants_exactly_what_the_code_calls() -> None:
    manifest = REPO_ROOT / "infra" / "rbac" / "opsctl-region.yaml"
    (role,) = [d for d in yaml.safe_load_all(manifest.read_text()) if d["kind"] == "Role"]
    granted = {
        (verb, resource, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    names = {"release": "im-gateway", "secret": "im-cassandra-dispatcher"}
    called = {
        (verb, resource, tuple(n.format(**names) for n in resource_names))
        for verb, resource, resource_names in API_VERBS
    }
    assert granted == called


@dataclass
class FakeKube:
    """The calls a drain makes, on dicts; a scale-down removes the pods at once (as kwok)."""

    context: str = "kwok-staging-eu-central"
    replicas: int = 3
    annotations: dict[str, str] = field(default_factory=dict)
    hpa: dict[str, int] = field(default_factory=lambda: {"minReplicas": 3, "maxReplicas": 6})
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    clock: list[float] = field(default_factory=lambda: [0.0])

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "deployments":
            return {
                "metadata": {"name": name, "annotations": dict(self.annotations)},
                "spec": {
                    "replicas": self.replicas,
                    "selector": {"matchLabels": {"app": "gw"}},
                    "template": {"spec": {"terminationGracePeriodSeconds": 5}},
                },
                "status": {"readyReplicas": self.replicas},
            }
        if kind == "horizontalpodautoscalers":
            return {"spec": dict(self.hpa)}
        if kind == "poddisruptionbudgets":
            return {"spec": {"maxUnavailable": 1}}
        return None

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [
            {
                "metadata": {
                    "name": f"{GATEWAY}-abc-{i}",
                    "labels": {"pod-template-hash": "abc"},
                    "ownerReferences": [{"kind": "ReplicaSet", "name": f"{GATEWAY}-abc"}],
                }
            }
            for i in range(self.replicas)
        ]

    def patch(self, kind: str, namespace: str, name: str, body: Any, patch_type: str) -> Any:
        self.calls.append((kind, json.dumps(body, sort_keys=True), self.clock[0]))
        spec = body.get("spec", {})
        if kind == "deployments":
            if "replicas" in spec:
                self.replicas = spec["replicas"]
            for key, value in body.get("metadata", {}).get("annotations", {}).items():
                if value is None:
                    self.annotations.pop(key, None)
                else:
                    self.annotations[key] = value
        else:
            self.hpa.update(spec)
        return {}

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("a drain creates nothing")

    def delete(self, kind: str, namespace: str, name: str) -> None:
        raise AssertionError("a drain deletes nothing")

    def can_i(self, verb: str, kind: str, namespace: str, name: str | None = None) -> bool:
        return True


def _regions(kube: FakeKube) -> ClusterRegions:
    spec = load_stack(DEFAULT_INFRA_DIR, "staging")

    def sleep(seconds: float) -> None:
        kube.clock[0] += seconds

    return ClusterRegions(
        spec,
        {"eu-central": ["a:9042"]},
        lambda context: kube,
        sessions_per_pod=1000,
        drain_window_s=1.0,
        sleep=sleep,
        clock=lambda: kube.clock[0],
    )


def test_a_drain_records_first_pins_the_hpa_and_waits_the_budget_between_steps() -> None:
    kube = FakeKube()
    report = _regions(kube).drain_gateways("eu-central", 500, NullProgress())
    assert [s.action for s in report.steps] == ["scaled 3->2", "scaled 2->1", "scaled 1->0"]
    assert [s.at_s for s in report.steps] == [0.0, 2.0, 4.0]  # 1000 sessions at 500/s
    assert kube.calls[0][0] == "deployments"  # the record comes before any change
    assert json.loads(kube.annotations[ANNOTATION]) == {
        "replicas": 3,
        "hpa": {"minReplicas": 3, "maxReplicas": 6},
    }
    pins = [json.loads(body)["spec"] for kind, body, _ in kube.calls if kind != "deployments"]
    assert pins == [{"minReplicas": n, "maxReplicas": n} for n in (2, 1, 1)]
    assert kube.replicas == 0


def test_a_resumed_drain_keeps_the_first_record_and_restore_puts_it_back() -> None:
    kube = FakeKube(replicas=2, annotations={ANNOTATION: json.dumps({"replicas": 3})})
    regions = _regions(kube)
    report = regions.drain_gateways("eu-central", 500, NullProgress())
    assert [s.action for s in report.steps] == ["scaled 2->1", "scaled 1->0"]
    assert json.loads(kube.annotations[ANNOTATION]) == {"replicas": 3}
    again = regions.drain_gateways("eu-central", 500, NullProgress())
    assert [s.action for s in again.steps] == ["already stopped"]

    started = regions.start_gateways("eu-central", NullProgress())
    assert [s.action for s in started.steps] == ["started 0->3"]
    assert kube.replicas == 3
    assert ANNOTATION not in kube.annotations  # removed only once the pods are ready
    assert [s.action for s in regions.start_gateways("eu-central", NullProgress()).steps] == [
        "already running"
    ]


def test_a_hand_edited_record_is_refused_before_any_change() -> None:
    from opsctl.errors import CheckFailed

    kube = FakeKube(annotations={ANNOTATION: "three"})
    with pytest.raises(CheckFailed, match="not what opsctl wrote"):
        _regions(kube).drain_gateways("eu-central", 500, NullProgress())
    assert kube.calls == []
