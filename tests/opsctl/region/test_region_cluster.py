"""opsctl region evacuate|restore --cluster: the staging regions' gateways and dispatchers are
the chart's objects (rendered by helm, Deployments, HPA, PDB) on the session's kwok clusters
(``prod_clusters``' eu-central and us-east, reached through the staging spec's kubeContexts),
opsctl runs as the ``opsctl-region`` ServiceAccount of infra/rbac/opsctl-region.yaml (so the
Role is enough), and the shard map is the session's multi-region stack's Cassandra."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import AppsV1Api, AutoscalingV2Api, CoreV1Api

from opsctl.cluster import plan_clusters
from opsctl.cluster.kwok import KwokClusters
from opsctl.kube import apply_objects
from opsctl.local import LocalStack
from opsctl.paths import DEFAULT_INFRA_DIR, REPO_ROOT
from opsctl.region._cluster import ANNOTATION
from opsctl.spec import load_stack
from opsctl.stack._gateway import chart_values
from tests.charts.helmkit import Helm
from tests.opsctl.region.conftest import (
    OPSCTL,
    REGIONS,
    STACK,
    clean_env,
    map_view,
    original_share,
    parse,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

EU, US = REGIONS
GATEWAY = "im-gateway-gateway"
DISPATCHER = "im-gateway-dispatcher"
RBAC = REPO_ROOT / "infra" / "rbac" / "opsctl-region.yaml"
BUDGET = 500  # the staging spec's reconnectBudget.reconnectsPerSecond
REPLICAS = 3  # the staging gateway's HPA minimum: what the HPA keeps it at
# Both Deployments leave replicas to their HPA in the chart: start them where it keeps them.
STARTING = {GATEWAY: REPLICAS, DISPATCHER: 2}


@pytest.fixture(scope="module")
def chart_objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """region -> the chart's objects a region drain touches, rendered with the builders'
    values for that staging region."""
    from opsctl.cluster import find_tools

    helm = Helm(find_tools(("helm",))["helm"], tmp_path_factory.mktemp("helm-home"))
    spec = load_stack(DEFAULT_INFRA_DIR, STACK)
    wanted = {
        ("ServiceAccount", "im-gateway"),
        ("Deployment", GATEWAY),
        ("Deployment", DISPATCHER),
        ("HorizontalPodAutoscaler", GATEWAY),
        ("PodDisruptionBudget", GATEWAY),
    }
    out = {}
    for region in spec.regions:
        values = tmp_path_factory.mktemp("values") / "values.yaml"
        values.write_text(yaml.safe_dump(chart_values(spec, region)))
        objects = helm.render(values=[values])
        out[region.name] = [o for o in objects if (o["kind"], o["metadata"]["name"]) in wanted]
        assert len(out[region.name]) == len(wanted), [o["kind"] for o in out[region.name]]
    return out


@dataclass
class Staging:
    """The test's namespace in each staging region's cluster, and a kubeconfig whose contexts
    are the staging spec's, each logged in as that cluster's opsctl-region ServiceAccount."""

    clusters: KwokClusters
    namespace: str
    kubeconfig: Path
    names: dict[str, str] = field(default_factory=dict)  # region -> kwok cluster name

    def client(self, region: str) -> Any:
        return self.clusters.api_client(self.names[region])

    def deployment(self, region: str, name: str = GATEWAY) -> Any:
        with self.client(region) as client:
            return AppsV1Api(client).read_namespaced_deployment(name, self.namespace)

    def hpa(self, region: str) -> Any:
        with self.client(region) as client:
            return AutoscalingV2Api(client).read_namespaced_horizontal_pod_autoscaler(
                GATEWAY, self.namespace
            )

    def gateway_pods(self, region: str) -> list[str]:
        with self.client(region) as client:
            pods = CoreV1Api(client).list_namespaced_pod(
                self.namespace, label_selector="app.kubernetes.io/component=gateway"
            )
            return sorted(p.metadata.name for p in pods.items)

    def ready(self, region: str, name: str, replicas: int) -> None:
        def done() -> bool:
            status = self.deployment(region, name).status
            return (status.ready_replicas or 0) == replicas and (status.replicas or 0) == replicas

        wait_for(f"{region} {name} {replicas} ready", done, timeout=90, interval=0.3)


def _namespace_in(client: Any, namespace: str) -> None:
    core = CoreV1Api(client)
    core.create_namespace({"metadata": {"name": namespace}})

    def has_default() -> bool:
        return any(
            a.metadata.name == "default"
            for a in core.list_namespaced_service_account(namespace).items
        )

    wait_for(f"the default service account in {namespace}", has_default, timeout=30)


def _in(namespace: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    placed = []
    for obj in objects:
        copy = json.loads(json.dumps(obj))
        copy["metadata"]["namespace"] = namespace
        if copy["kind"] == "Deployment":
            copy["spec"].setdefault("replicas", STARTING[copy["metadata"]["name"]])
        placed.append(copy)
    return placed


@pytest.fixture
def regions(
    prod_clusters: KwokClusters,
    multi_region_stack: LocalStack,
    chart_objects: dict[str, list[dict[str, Any]]],
    tmp_path: Path,
) -> Iterator[Staging]:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    prod = {plan.region: plan for plan in plan_clusters(DEFAULT_INFRA_DIR, "prod")}
    staging = plan_clusters(DEFAULT_INFRA_DIR, STACK)
    source = yaml.safe_load(prod_clusters.kubeconfig_path.read_text())
    auth = multi_region_stack.cassandra_auth("dispatcher")
    login = {"username": auth.username, "password": auth.password}
    rbac = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    config: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": []}
    config["contexts"] = []
    found = Staging(prod_clusters, namespace, tmp_path / "kubeconfig")
    for plan in staging:
        twin = prod[plan.region]
        found.names[plan.region] = twin.name
        with prod_clusters.api_client(twin.name) as client:
            _namespace_in(client, namespace)
            apply_objects(client, _in(namespace, rbac))
            CoreV1Api(client).create_namespaced_secret(
                namespace,
                {"metadata": {"name": "im-cassandra-dispatcher"}, "stringData": login},
            )
            apply_objects(client, _in(namespace, chart_objects[plan.region]))
            token = (
                CoreV1Api(client)
                .create_namespaced_service_account_token(
                    "opsctl-region", namespace, {"spec": {"expirationSeconds": 3600}}
                )
                .status.token
            )
        context = next(c for c in source["contexts"] if c["name"] == twin.context)
        cluster = next(c for c in source["clusters"] if c["name"] == context["context"]["cluster"])
        config["clusters"].append({"name": plan.context, "cluster": cluster["cluster"]})
        config["users"].append({"name": plan.context, "user": {"token": token}})
        config["contexts"].append(
            {"name": plan.context, "context": {"cluster": plan.context, "user": plan.context}}
        )
    found.kubeconfig.write_text(yaml.safe_dump(config))
    for region in REGIONS:
        found.ready(region, GATEWAY, REPLICAS)
        found.ready(region, DISPATCHER, STARTING[DISPATCHER])
    try:
        yield found
    finally:
        for region in REGIONS:
            with found.client(region) as client:
                CoreV1Api(client).delete_namespace(namespace, propagation_policy="Background")


def _command(stack: LocalStack, found: Staging, *args: str) -> list[str]:
    ca = stack.cassandra_auth("dispatcher").ca_file
    flags = ["--cluster", "--kubeconfig", str(found.kubeconfig), "-n", found.namespace]
    flags += ["--cassandra-ca", str(ca)]
    for region in REGIONS:
        info = stack.info.region(region)
        flags += ["--cassandra", f"{region}={info.cassandra_hosts}"]
        flags += ["--kafka", f"{region}={info.kafka_bootstrap}"]
    return [str(OPSCTL), "region", *args, "--stack", STACK, *flags, "-o", "json"]


def _run(stack: LocalStack, found: Staging, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    done = subprocess.run(
        _command(stack, found, *args),
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
        check=False,
    )
    return done.returncode, parse(done.stdout), done.stderr


@dataclass
class PodWatch:
    """When the region's gateway pod count changed, seen from outside opsctl."""

    found: Staging
    region: str
    changes: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> PodWatch:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        with self.found.client(self.region) as client:
            core = CoreV1Api(client)
            while not self._stop.is_set():
                count = len(
                    core.list_namespaced_pod(
                        self.found.namespace, label_selector="app.kubernetes.io/component=gateway"
                    ).items
                )
                if not self.changes or self.changes[-1][1] != count:
                    self.changes.append((time.monotonic(), count))
                self._stop.wait(0.05)


def _assert_drained(found: Staging, data: dict[str, Any], steps: list[str]) -> None:
    gateways = data["gateways"]
    assert [g["action"] for g in gateways] == steps
    assert all(g["name"] == f"{EU}/{found.namespace}/{GATEWAY}" for g in gateways)
    deployment = found.deployment(EU)
    assert deployment.spec.replicas == 0
    assert json.loads(deployment.metadata.annotations[ANNOTATION]) == {
        "replicas": REPLICAS,
        "hpa": {"minReplicas": REPLICAS, "maxReplicas": 6},
    }
    hpa = found.hpa(EU)  # pinned: it would raise the Deployment back to its minimum
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 1)
    assert found.gateway_pods(EU) == []
    assert data["left"]["gateways_serving"] == []


def _assert_restored(stack: LocalStack, found: Staging) -> None:
    code, data, stderr = _run(stack, found, "restore", EU, "--batch", "4096")
    assert code == 0, stderr
    assert data is not None
    assert data["complete"] is True
    assert data["home_share"] == original_share(4)
    assert [g["action"] for g in data["gateways"]] == [f"started 0->{REPLICAS}"]
    deployment = found.deployment(EU)
    assert deployment.spec.replicas == REPLICAS
    assert deployment.status.ready_replicas == REPLICAS
    assert ANNOTATION not in (deployment.metadata.annotations or {})
    hpa = found.hpa(EU)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (REPLICAS, 6)
    assert map_view(stack).home_share == original_share()
    assert found.deployment(US).spec.replicas == REPLICAS  # the other region untouched


def test_evacuate_on_the_clusters_drains_at_the_budget_pace_and_restore_brings_all_back(
    home_again: LocalStack, regions: Staging
) -> None:
    stack, found = home_again, regions
    assert map_view(stack).home_share == original_share()
    per_pod = 1000  # 2 s of the budget per pod: a step, then 2 s before the next
    with PodWatch(found, EU) as watch:
        code, data, stderr = _run(
            stack, found, "evacuate", EU, "--batch", "4096",
            "--sessions-per-pod", str(per_pod), "--drain-window", "1",
        )  # fmt: skip
    assert code == 0, stderr
    assert data is not None
    print(
        f"cluster evacuation: {data['shards_moved']} shards, gateway steps {data['gateways']}, "
        f"{data['duration_s']} s"
    )
    assert data["complete"] is True
    assert data["shards_moved"] == data["shards_planned"] == round(4096 * original_share()[EU])
    assert data["home_share"] == {EU: 0.0, US: 1.0}
    assert map_view(stack).home_share == {EU: 0.0, US: 1.0}
    # The PDB's maxUnavailable 1 and the budget: one pod per step, 2 s apart at least.
    _assert_drained(found, data, ["scaled 3->2", "scaled 2->1", "scaled 1->0"])
    pace = per_pod / BUDGET
    starts = [g["at_s"] for g in data["gateways"]]
    assert all(b - a >= pace for a, b in itertools.pairwise(starts)), starts
    # Seen from outside: the pods went one at a time, no faster than the budget allows.
    drops = [(t, n) for t, n in watch.changes if n < REPLICAS]
    assert [n for _, n in drops] == [2, 1, 0], watch.changes
    # Each observation can lag (a loaded run saw gaps of 2.5 s then 1.5 s at a 2 s pace): the
    # span from the first drop to the last is what cannot be shorter than the pace.
    span = drops[-1][0] - drops[0][0]
    assert span >= (len(drops) - 1) * pace - 0.5, watch.changes

    again_code, again, stderr = _run(stack, found, "evacuate", EU)
    assert again_code == 0, stderr  # done already: nothing to move, nothing to drain
    assert again is not None
    assert again["shards_planned"] == 0
    assert [g["action"] for g in again["gateways"]] == ["already stopped"]

    _assert_restored(stack, found)


def test_an_interrupted_cluster_evacuation_resumes_from_what_the_deployment_recorded(
    home_again: LocalStack, regions: Staging
) -> None:
    stack, found = home_again, regions
    command = _command(stack, found, "evacuate", EU, "--batch", "4096")
    command += ["--sessions-per-pod", "2000", "--drain-window", "1"]  # 4 s per pod
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    )
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if not line or "pausing" in line:  # the first pod is gone, the budget's wait began
            break
    assert "pausing" in lines[-1], "".join(lines)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    data = parse(out)
    assert data is not None
    assert data["interrupted"] is True
    assert data["complete"] is False
    assert data["left"]["shards_homed_in_region"] == 0  # the map moved before the drain
    assert len(data["left"]["gateways_serving"]) == REPLICAS - 1
    deployment = found.deployment(EU)
    assert deployment.spec.replicas == REPLICAS - 1
    assert json.loads(deployment.metadata.annotations[ANNOTATION])["replicas"] == REPLICAS

    code, resumed, stderr = _run(
        stack, found, "evacuate", EU, "--sessions-per-pod", "1000", "--drain-window", "1"
    )
    assert code == 0, stderr
    assert resumed is not None
    assert resumed["complete"] is True
    assert resumed["shards_planned"] == 0
    _assert_drained(found, resumed, ["scaled 2->1", "scaled 1->0"])

    _assert_restored(stack, found)
