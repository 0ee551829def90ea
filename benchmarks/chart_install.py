"""Time for `helm install` of charts/im-gateway to become ready on a kwok cluster.

Starts one simulated cluster for the local stack's region (private state directory, deleted at
the end), installs the upstream ServiceMonitor CRD, then per run and scenario installs the chart
into a fresh namespace (Pod Security `restricted` enforced) and measures, from the moment
`helm install` starts:

- helm:  `helm install --wait` returns (helm's own readiness check: kstatus watcher);
- ready: every Deployment rolled out at its final size: for production, after the HPA has
  raised the gateway to minReplicas (the HPA controller syncs every 15 s, which dominates).

Scenarios: minimal, and production with tests/charts/kwok-sizing-values.yaml (4..6 gateways,
2..4 dispatchers: the 6-node cluster cannot hold production's 40 one-per-node gateways).

Run: .venv/bin/python -m benchmarks.chart_install [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kubernetes.client import ApiClient, CoreV1Api, V1Namespace, V1ObjectMeta, V1Secret

from opsctl.cluster._plan import plan_clusters
from opsctl.cluster._tools import find_tools
from opsctl.cluster.crds import install_crds
from opsctl.cluster.kwok import KwokClusters
from opsctl.paths import DEFAULT_INFRA_DIR, REPO_ROOT
from tests.charts.helmkit import (
    CHART,
    RELEASE,
    RESTRICTED,
    Helm,
    component_name,
    scenario_file,
    value_args,
    wait_for,
    wait_rolled_out,
)

SIZING = REPO_ROOT / "tests" / "charts" / "kwok-sizing-values.yaml"
# scenario -> (values files, {deployment component: replicas when ready})
SCENARIOS: dict[str, tuple[list[Path], dict[str, int]]] = {
    "minimal": ([scenario_file("minimal")], {"gateway": 1, "dispatcher": 1}),
    "production": ([scenario_file("production"), SIZING], {"gateway": 4, "dispatcher": 2}),
}


def summary(times: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(times), 2),
        "min_s": round(min(times), 2),
        "max_s": round(max(times), 2),
    }


def one_install(helm: Helm, api_client: ApiClient, scenario: str) -> tuple[float, float]:
    """Seconds until `helm install --wait` returns, and until every Deployment is rolled out."""
    values, replicas = SCENARIOS[scenario]
    core = CoreV1Api(api_client)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        V1Namespace(metadata=V1ObjectMeta(name=namespace, labels={RESTRICTED: "restricted"}))
    )
    try:
        wait_for(
            "the namespace's default service account",
            lambda: any(
                sa.metadata.name == "default"
                for sa in core.list_namespaced_service_account(namespace).items
            ),
        )
        if scenario == "production":
            core.create_namespaced_secret(
                namespace,
                V1Secret(
                    metadata=V1ObjectMeta(name="im-gateway-jwks"),
                    string_data={"jwks.json": '{"keys": []}'},
                ),
            )
        start = time.perf_counter()
        helm.run(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            "180s",
            *value_args(values),
        )
        helm_done = time.perf_counter() - start
        for component, count in replicas.items():
            wait_rolled_out(
                api_client, namespace, component_name(component), replicas=count, timeout=180
            )
        ready = time.perf_counter() - start
        return helm_done, ready
    finally:
        core.delete_namespace(namespace, propagation_policy="Background")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tools = find_tools()
    helm_binary = find_tools(("helm",))["helm"]
    plan = plan_clusters(DEFAULT_INFRA_DIR, "local")[0]
    results: dict[str, dict[str, dict[str, float]]] = {}
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="bench-chart-") as state:
        clusters = KwokClusters(Path(state) / "kwok", tools=tools)
        try:
            clusters.up([plan])
            helm = Helm(helm_binary, Path(state) / "helm", clusters.kubeconfig_path, plan.context)
            with clusters.api_client(plan.name) as api_client:
                install_crds(api_client, ["prometheus-operator"], kinds={"ServiceMonitor"})
                for run in range(args.runs):
                    for scenario in SCENARIOS:
                        helm_s, ready_s = one_install(helm, api_client, scenario)
                        timings[scenario].append((helm_s, ready_s))
                        print(
                            f"run {run + 1} {scenario:10s}: helm --wait {helm_s:5.1f} s, "
                            f"all rolled out {ready_s:5.1f} s",
                            file=sys.stderr,
                        )
        finally:
            clusters.down()
    for scenario, pairs in timings.items():
        helm_wait = summary([helm_s for helm_s, _ in pairs])
        rolled_out = summary([ready_s for _, ready_s in pairs])
        results[scenario] = {"helm_install_wait": helm_wait, "rolled_out": rolled_out}
        print(
            f"{scenario}: helm install --wait median {helm_wait['median_s']} s, "
            f"every Deployment rolled out median {rolled_out['median_s']} s",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "machine": platform.node(),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "runs": args.runs,
                "results": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
