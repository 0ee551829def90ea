"""The exact bodies a rollout sends, against a fake API server and fake Prometheus."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from opsctl.errors import KubeError, UserInputError
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.rollout import Driver, StartRequest, build_plan
from opsctl.rollout._analysis import Metrics
from opsctl.rollout._kube import KubeApi, PatchType, check_permissions
from opsctl.rollout._plan import RegionTarget
from opsctl.spec import load_stack
from tests.opsctl.rollout.harness import NEW_IMAGE, OLD_IMAGE, stable_deployment

pytestmark = pytest.mark.unit
NS = "im"
CANARY = "im-gateway-gateway-canary"


class FakeKube:
    """Deployments become ready at once; every write is recorded as (verb, kind, name, body)."""

    context = "kwok-local"

    def __init__(self, allowed: bool = True) -> None:
        stable = stable_deployment(NS)
        stable["metadata"].update({"generation": 1, "annotations": {}})
        self.objects: dict[tuple[str, str], dict[str, Any]] = {
            ("deployments", "im-gateway-gateway"): stable
        }
        self._settle(stable)
        self.calls: list[tuple[str, str, str, Any, str | None]] = []
        self.allowed = allowed

    def _settle(self, deployment: dict[str, Any]) -> None:
        replicas = deployment["spec"]["replicas"]
        deployment["status"] = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
            "readyReplicas": replicas,
        }

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found else None

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        if kind == "pods":
            canary = self.objects.get(("deployments", CANARY))
            count = canary["spec"]["replicas"] if canary else 0
            return [{"metadata": {"name": f"{CANARY}-abc12-p{i}"}} for i in range(count)]
        return []

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", kind, body["metadata"]["name"], copy.deepcopy(body), None))
        stored = copy.deepcopy(body)
        stored["metadata"]["generation"] = 1
        if kind == "deployments":
            self._settle(stored)
        self.objects[(kind, body["metadata"]["name"])] = stored
        return stored

    def patch(
        self, kind: str, namespace: str, name: str, body: Any, patch_type: PatchType
    ) -> dict[str, Any]:
        if kind == "configmaps":
            found = self.objects.get((kind, name))
            if found is None:
                raise KubeError("not found", status=404)
            found.setdefault("data", {}).update(body["data"])
            return found
        self.calls.append(("patch", kind, name, copy.deepcopy(body), patch_type))
        found = self.objects[(kind, name)]
        spec = found["spec"]
        if patch_type == "json":
            for op in body:
                spec[op["path"].removeprefix("/spec/")] = copy.deepcopy(op["value"])
        else:
            if "replicas" in body["spec"]:
                spec["replicas"] = body["spec"]["replicas"]
            if "template" in body["spec"]:
                spec["template"]["spec"]["containers"][0]["image"] = body["spec"]["template"][
                    "spec"
                ]["containers"][0]["image"]
            for key in ("minReadySeconds", "strategy"):
                if key in body["spec"]:
                    spec[key] = body["spec"][key]
        found["metadata"]["generation"] += 1
        self._settle(found)
        return found

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.calls.append(("delete", kind, name, None, None))
        self.objects.pop((kind, name), None)

    def can_i(self, verb: str, kind: str, namespace: str, name: str | None = None) -> bool:
        return self.allowed

    def deployment_calls(self) -> list[tuple[str, str, Any, str | None]]:
        return [
            (verb, name, body, pt)
            for verb, kind, name, body, pt in self.calls
            if kind == "deployments"
        ]


class FakeMetrics:
    def __init__(self, canary_p99_ms: float = 40.0) -> None:
        self.canary_p99_ms = canary_p99_ms
        self.queries: list[str] = []

    def query(self, expr: str) -> float | None:
        self.queries.append(expr)
        canary = "-canary-[a-z0-9]" in expr
        if "-abc12-p" in expr:  # the leaving canary pods' connections: drained
            return 0.0
        if "histogram_quantile" in expr:
            return self.canary_p99_ms if canary else 40.0
        if "increase(" in expr or expr.startswith("sum(im_gateway_connections_active"):
            return 1000.0 if "drain" not in expr else 0.0
        if "im_dispatcher_consumer_lag" in expr:
            return 5.0
        if 'reason="accepted"' in expr:
            return 1.0
        return 0.0  # error ratio, abnormal disconnects, reconnects


def plan_for(**overrides: Any) -> Any:
    spec = load_stack(DEFAULT_INFRA_DIR, "local")
    request = StartRequest(
        stack="local",
        image=NEW_IMAGE,
        steps="50,100",
        interval="10ms",
        bake="10ms",
        drain_window="1s",
        prometheus=("http://127.0.0.1:9",),
        namespace=NS,
    )
    for key, value in overrides.items():
        object.__setattr__(request, key, value)
    return build_plan(spec, request)


def run(kube: FakeKube, metrics: Metrics, **overrides: Any) -> Any:
    plan = plan_for(**overrides)

    def connect(target: RegionTarget) -> tuple[KubeApi, Metrics | None]:
        return kube, metrics

    return plan, Driver(plan, connect, poll_s=0.001).start()


def test_a_passing_canary_sends_exactly_these_bodies() -> None:
    kube = FakeKube()
    stable_before = copy.deepcopy(kube.objects[("deployments", "im-gateway-gateway")])
    plan, outcome = run(kube, FakeMetrics())
    assert outcome.phase == "succeeded", outcome.reason
    selector = stable_before["spec"]["selector"]["matchLabels"]
    canary_template = copy.deepcopy(stable_before["spec"]["template"])
    canary_template["metadata"]["labels"]["im.platform/track"] = "canary"
    canary_template["spec"]["containers"][0]["image"] = NEW_IMAGE
    assert kube.deployment_calls() == [
        (
            "create",
            CANARY,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": CANARY,
                    "namespace": NS,
                    "labels": {
                        **selector,
                        "app.kubernetes.io/managed-by": "opsctl-rollout",
                        "im.platform/track": "canary",
                    },
                    "annotations": {"opsctl.io/rollout-id": plan.id},
                },
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {**selector, "im.platform/track": "canary"}},
                    "template": canary_template,
                    "revisionHistoryLimit": 1,
                    "strategy": stable_before["spec"]["strategy"],
                },
            },
            None,
        ),
        ("patch", CANARY, {"spec": {"replicas": 2}}, "strategic"),  # 50 % of 4
        (
            "patch",
            "im-gateway-gateway",
            {
                "metadata": {"annotations": {"opsctl.io/rollout-id": plan.id}},
                "spec": {
                    # budget 200/s, 10000 connections a pod over 0.8 s -> one pod at a time
                    "minReadySeconds": 1,
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                    },
                    "template": {"spec": {"containers": [{"name": "gateway", "image": NEW_IMAGE}]}},
                },
            },
            "strategic",
        ),
        (
            "patch",
            "im-gateway-gateway",
            [
                {"op": "add", "path": "/spec/minReadySeconds", "value": 0},
                {"op": "add", "path": "/spec/strategy", "value": stable_before["spec"]["strategy"]},
            ],
            "json",
        ),
        ("patch", CANARY, {"spec": {"replicas": 1}}, "strategic"),
        ("patch", CANARY, {"spec": {"replicas": 0}}, "strategic"),
        ("delete", CANARY, None, None),
    ]
    state = kube.objects[("configmaps", "opsctl-rollout-gateway")]["data"]
    region = json.loads(state["region.json"])
    assert region["phase"] == "done"
    assert region["previous_image"] == OLD_IMAGE
    canary_analysis = region["analyses"][0]
    assert canary_analysis["kind"] == "canary"
    assert canary_analysis["verdict"] == "pass"
    p99 = canary_analysis["signals"][0]
    assert p99["name"] == "delivery_p99_ms"
    assert p99["canary"] == 40.0
    assert p99["slo"] == 250.0
    assert 'pod=~"im-gateway-gateway-canary-[a-z0-9]+-[a-z0-9]+"' in p99["query"]


def test_a_failing_canary_is_deleted_and_stable_never_patched() -> None:
    kube = FakeKube()
    _, outcome = run(kube, FakeMetrics(canary_p99_ms=900.0))
    assert outcome.phase == "rolled_back"
    assert "delivery_p99_ms: 900 breaches the SLO 250" in outcome.reason
    assert kube.deployment_calls() == [
        ("create", CANARY, kube.deployment_calls()[0][2], None),
        ("patch", CANARY, {"spec": {"replicas": 2}}, "strategic"),
        ("delete", CANARY, None, None),
    ]


def test_failure_limit_allows_retries_before_rolling_back() -> None:
    kube = FakeKube()
    metrics = FakeMetrics(canary_p99_ms=900.0)
    _, outcome = run(kube, metrics, failure_limit=2)
    assert outcome.phase == "rolled_back"
    region = json.loads(
        kube.objects[("configmaps", "opsctl-rollout-gateway")]["data"]["region.json"]
    )
    assert region["failures"] == 3
    assert len(region["analyses"]) == 3


def test_rollout_stops_before_any_change_without_permissions() -> None:
    kube = FakeKube(allowed=False)
    with pytest.raises(KubeError, match="lacks permissions"):
        run(kube, FakeMetrics())
    assert kube.calls == []


def test_missing_permissions_are_listed_by_name() -> None:
    kube = FakeKube(allowed=False)
    with pytest.raises(KubeError) as raised:
        check_permissions(kube, NS, "opsctl-rollout-gateway")
    assert "patch configmaps/opsctl-rollout-gateway" in raised.value.message


def test_bad_input_raises_before_connecting() -> None:
    with pytest.raises(UserInputError, match="must increase"):
        plan_for(steps="50,40")
