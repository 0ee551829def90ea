"""`opsctl loadtest preflight --on-cluster` and `opsctl loadtest capacity --on-cluster` through
the CLI against a real kube-apiserver (kwok), as a capacity planner runs them:

- preflight reads the namespace's ResourceQuota and the nodes: a quota smaller than the
  computed sizing is exit 1 naming the quota and the key, enough quota is exit 0;
- capacity runs every step as one distributed run (manifests created in the namespace, their
  pods played as local processes against the local stack by tests/opsctl/loadtest/kubelet.py,
  the verdict collected through the API) and prints the knee and the plan.
"""

from __future__ import annotations

import json
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest

from opsctl.loadtest.oncluster import JWT_SECRET_NAME
from tests.loadtests.conftest import write_profile
from tests.opsctl.loadtest.kubelet import ProcessKubelet, without_job_completion

pytestmark = pytest.mark.integration


def _quota(admin: Any, namespace: str, hard: dict[str, str]) -> None:
    from kubernetes.client import CoreV1Api

    core = CoreV1Api(admin)
    body = {"metadata": {"name": "loadtest-quota"}, "spec": {"hard": hard}}
    if core.list_namespaced_resource_quota(namespace).items:
        core.replace_namespaced_resource_quota("loadtest-quota", namespace, body)
    else:
        core.create_namespaced_resource_quota(namespace, body)


def test_preflight_on_cluster_names_a_quota_too_small(opsctl, kube_cluster, kube_namespace) -> None:
    preflight = (
        "loadtest",
        "preflight",
        "--on-cluster",
        "--profile",
        "peak",
        "--stack",
        "local",
        "--namespace",
        kube_namespace,
        "--kubeconfig",
        str(kube_cluster.kubeconfig),
        "--output",
        "json",
    )
    with kube_cluster.api_client() as admin:
        # peak: 5000 users on one worker, well over 64Mi of memory with its master.
        _quota(admin, kube_namespace, {"limits.memory": "64Mi", "pods": "10"})
    result = opsctl(*preflight)
    assert result.exit_code == 1, result.stderr
    report = json.loads(result.stdout)
    failed = {c["name"]: c for c in report["checks"] if not c["ok"]}
    assert list(failed) == ["quota loadtest-quota: limits.memory"], report
    assert (
        "raise limits.memory in ResourceQuota loadtest-quota"
        in failed["quota loadtest-quota: limits.memory"]["fix"]
    )
    assert "sizing:" in result.stderr  # shown before the checks

    with kube_cluster.api_client() as admin:
        _quota(admin, kube_namespace, {"limits.memory": "64Gi", "pods": "10"})
    result = opsctl(*preflight)
    assert result.exit_code == 0, result.stdout
    checks = {c["name"]: c["ok"] for c in json.loads(result.stdout)["checks"]}
    assert checks == {
        "quota loadtest-quota: limits.memory": True,
        "quota loadtest-quota: pods": True,
        "nodes can schedule the pods": True,
    }


def test_capacity_on_cluster_runs_each_step_as_a_distributed_run(
    opsctl, kube_cluster, kube_namespace, local_stack, tmp_path: Path
) -> None:
    from kubernetes.client import BatchV1Api, CoreV1Api

    info = local_stack.info
    profile = write_profile(
        tmp_path,
        name="capacity",
        users=5,
        spawn_rate=8,
        drain_s=2,
        # Two steps that both pass on any machine: the knee is the last step (a lower bound).
        capacity={
            "start_users": 5,
            "max_users": 10,
            "step_factor": 2,
            "warmup_s": 2,
            "settle_s": 1,
            "measure_s": 3,
            "search_steps": 0,
            "headroom_pct": 20,
        },
        slo={
            "delivery_p50_ms": 5000,
            "delivery_p95_ms": 8000,
            "delivery_p99_ms": 10000,
            "max_error_ratio": 0.5,
        },
    )
    args = ["--target", info.gateway_ws_urls[0]]
    command = (
        "loadtest",
        "capacity",
        "--on-cluster",
        "--profile",
        str(profile),
        "--stack",
        "local",
        "--plan-stack",
        "local",
        "--namespace",
        kube_namespace,
        "--kubeconfig",
        str(kube_cluster.kubeconfig),
        *args,
        "--jwt-issuer",
        info.jwt_issuer,
        "--jwt-audience",
        info.jwt_audience,
        "--workers",
        "1",
        "--out-dir",
        str(tmp_path / "cap"),
        "--output",
        "json",
    )
    done: dict[str, Any] = {}

    def capacity() -> None:
        try:
            done["result"] = opsctl(*command)
        except BaseException as error:
            done["error"] = error

    thread = threading.Thread(target=capacity, daemon=True)
    with kube_cluster.api_client() as admin, without_job_completion(admin, kube_namespace):
        CoreV1Api(admin).create_namespaced_secret(
            kube_namespace,
            {
                "metadata": {"name": JWT_SECRET_NAME},
                "stringData": {"secret": info.jwt_secret_file.read_text().strip()},
            },
        )
        with ProcessKubelet(admin, kube_namespace, None, tmp_path / "pods") as kubelet:
            thread.start()
            thread.join(timeout=300)
            assert not thread.is_alive(), "opsctl capacity did not return"
            assert not kubelet.errors, [
                "".join(traceback.format_exception(error)) for error in kubelet.errors
            ]
            masters = kubelet.pods("master")
            logs = "\n".join(kubelet.log(pod)[-2000:] for pod in masters)
        jobs = BatchV1Api(admin).list_namespaced_job(kube_namespace).items
    assert "error" not in done, done
    result = done["result"]
    assert result.exit_code == 0, f"{result.stderr}\n{logs}"
    report = json.loads(result.stdout)
    search = report["search"]
    assert [step["users"] for step in search["steps"]] == [5, 10]
    assert len(masters) == 2  # one distributed run per step, each with its own master
    for step in search["steps"]:
        assert step["status"] == "pass", step
        summary = json.loads((Path(step["out_dir"]) / "summary.json").read_text())
        assert len(summary["on_cluster"]["workers_seen"]) == 1
        assert summary["users"] == step["users"]
    assert search["knee_users"] == 10
    assert search["first_breach_users"] is None
    plan = report["plan"][0]
    assert plan["region"] == "local"
    assert plan["measured_users_per_pod"] == 10  # one gateway given as the target
    assert plan["pods_needed"] is not None
    assert "sizing:" in result.stderr  # each step's sizing is shown
    assert [job.metadata.name for job in jobs if "kwok-probe" not in job.metadata.name] == []
