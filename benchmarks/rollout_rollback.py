"""Time from a bad canary's first failing analysis to a completed rollback (canary Deployment
deleted and its pods gone), on a real kwok cluster with a real Prometheus. Target: at most 2
analysis intervals.

Each run: a fresh namespace with the chart-shaped gateway (4 pods), exporters where the canary
breaches the delivery p99 and error SLOs, `opsctl rollout start` through the domain API; the
figure is read from the rollout's own events in the cluster (analysis verdict -> rollback
complete).

Run: .venv/bin/python -m benchmarks.rollout_rollback [--runs 5] [--interval 3s]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import uuid
from pathlib import Path

from kubernetes.client import CoreV1Api

from opsctl.cluster import plan_clusters
from opsctl.cluster.kwok import KwokClusters
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.rollout import StartRequest, rest_factory, start
from opsctl.rollout._state import StateStore
from opsctl.spec import load_stack, parse_duration
from tests.opsctl.rollout.conftest import deploy_gateway
from tests.opsctl.rollout.harness import (
    BREACHING,
    CANARY_POD,
    DISPATCHER,
    DISPATCHER_POD,
    HEALTHY,
    NEW_IMAGE,
    STABLE_POD,
    MetricsLab,
)


def one_run(clusters: KwokClusters, workdir: Path, interval: str) -> float:
    plan = plan_clusters(DEFAULT_INFRA_DIR, "local")[0]
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    with clusters.api_client(plan.name) as client:
        CoreV1Api(client).create_namespace({"metadata": {"name": namespace}})
        deploy_gateway(client, namespace)
    pods = {CANARY_POD: BREACHING, STABLE_POD: HEALTHY, DISPATCHER_POD: DISPATCHER}
    lab = MetricsLab(workdir / namespace, namespace, pods).start()
    kube = rest_factory(clusters.kubeconfig_path)
    try:
        request = StartRequest(
            stack="local",
            image=NEW_IMAGE,
            steps="50,100",
            interval=interval,
            bake=interval,
            drain_window="1s",
            min_samples=20,
            namespace=namespace,
            prometheus=(lab.url,),
        )
        outcome = start(load_stack(DEFAULT_INFRA_DIR, "local"), request, kube)
    finally:
        lab.stop()
    assert outcome.phase == "rolled_back", outcome.reason
    progress = StateStore(kube(plan.context), namespace, "gateway").region()
    assert progress is not None
    failed = next(e["t"] for e in progress.events if e["message"].startswith("analysis fail"))
    done = next(e["t"] for e in progress.events if e["message"] == "rollback complete")
    with clusters.api_client(plan.name) as client:
        CoreV1Api(client).delete_namespace(namespace)
    return float(done - failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--interval", default="3s")
    args = parser.parse_args()
    interval_s = parse_duration(args.interval)
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        clusters = KwokClusters(Path(tmp) / "kwok")
        try:
            clusters.up(plan_clusters(DEFAULT_INFRA_DIR, "local"), nodes_per_zone=1)
            times = [one_run(clusters, Path(tmp), args.interval) for _ in range(args.runs)]
        finally:
            clusters.down()
    for index, seconds in enumerate(times, 1):
        print(f"run {index}: rollback {seconds * 1000:.0f} ms after the failing analysis")
    worst = max(times)
    print(
        f"failing analysis -> rollback complete: median {statistics.median(times) * 1000:.0f} ms, "
        f"max {worst * 1000:.0f} ms over {len(times)} runs; analysis interval {interval_s:g} s; "
        f"max = {worst / interval_s:.3f} intervals (target <= 2): "
        f"{'PASS' if worst <= 2 * interval_s else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
