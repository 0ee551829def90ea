"""The on-cluster manifests against a real kube-apiserver (kwok completes the Job pods)."""

from __future__ import annotations

import pytest

from opsctl.loadtest.oncluster import apply_manifests, build_manifests, wait_for_jobs
from opsctl.loadtest.profiles import load_profile

pytestmark = pytest.mark.integration


def test_master_and_worker_jobs_are_accepted_and_complete(kube_cluster, kube_namespace) -> None:
    from kubernetes.client import BatchV1Api, CoreV1Api

    run = "lt-kwoktest"
    manifests = build_manifests(
        run=run,
        profile=load_profile("smoke"),
        profile_text="name: smoke\n",
        target_urls=["ws://gateway.local.local.im.internal/ws"],
        image="registry.im.internal/im/loadtest:0.1.0",
        workers=2,
    )
    with kube_cluster.api_client() as client:
        created = apply_manifests(client, kube_namespace, manifests)
        assert created == [
            f"configmap/{run}-profile",
            f"service/{run}-master",
            f"job/{run}-master",
            f"job/{run}-worker",
        ]
        service = CoreV1Api(client).read_namespaced_service(f"{run}-master", kube_namespace)
        assert service.spec.ports[0].port == 5557
        states = wait_for_jobs(client, kube_namespace, run, timeout_s=90)
        assert states == {f"{run}-master": "succeeded", f"{run}-worker": "succeeded"}
        worker = BatchV1Api(client).read_namespaced_job(f"{run}-worker", kube_namespace)
        assert worker.status.succeeded == 2
        pods = CoreV1Api(client).list_namespaced_pod(
            kube_namespace, label_selector=f"app.kubernetes.io/instance={run}"
        )
        assert len(pods.items) == 3
