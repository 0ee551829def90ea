"""A 3-region rollout (the prod stack's regions) on three real kwok clusters (the session's
``prod_clusters``)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from kubernetes.client import AppsV1Api, CoreV1Api
from kubernetes.config import new_client_from_config

from opsctl.cluster import plan_clusters
from opsctl.cluster.kwok import KwokClusters
from opsctl.errors import ExitCode
from opsctl.paths import DEFAULT_INFRA_DIR
from tests.opsctl.rollout.conftest import deploy_gateway
from tests.opsctl.rollout.harness import (
    CANARY_POD,
    DISPATCHER,
    DISPATCHER_POD,
    HEALTHY,
    LAB_TIMINGS,
    NEW_IMAGE,
    STABLE,
    STABLE_POD,
    MetricsLab,
    flags,
)
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration


def test_three_regions_roll_out_primary_first(
    opsctl_rollout: OpsctlRunner, prod_clusters: KwokClusters, tmp_path: Path
) -> None:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    plans = plan_clusters(DEFAULT_INFRA_DIR, "prod")
    kubeconfig = str(prod_clusters.kubeconfig_path)
    for plan in plans:
        with new_client_from_config(config_file=kubeconfig, context=plan.context) as client:
            CoreV1Api(client).create_namespace({"metadata": {"name": namespace}})
            deploy_gateway(client, namespace, replicas=2)
    pods = {CANARY_POD: HEALTHY, STABLE_POD: HEALTHY, DISPATCHER_POD: DISPATCHER}
    lab = MetricsLab(tmp_path / "metrics", namespace, pods).start()
    try:
        target = flags(stack="prod", namespace=namespace, kubeconfig=kubeconfig)
        values = flags(image="0.2.0", prometheus=lab.url, **LAB_TIMINGS, output="json")
        result = opsctl_rollout("rollout", "start", *target, *values)
    finally:
        lab.stop()
    assert result.exit_code == ExitCode.OK, result.stderr
    report = json.loads(result.stdout)
    assert report["phase"] == "succeeded"
    assert [r["region"] for r in report["regions"]] == ["ap-east", "eu-central", "us-east"]
    assert all(r["phase"] == "done" for r in report["regions"])
    # Waves in order: a region starts only after the previous one finished.
    regions = ["ap-east", "eu-central", "us-east"]
    starts = [result.stderr.index(f"{name} wave {i + 1}") for i, name in enumerate(regions)]
    dones = [result.stderr.index(f"{name} region done") for name in regions]
    assert starts[0] < dones[0] < starts[1] < dones[1] < starts[2] < dones[2]
    for plan in plans:
        with new_client_from_config(config_file=kubeconfig, context=plan.context) as client:
            deployment = AppsV1Api(client).read_namespaced_deployment(STABLE, namespace)
            assert deployment.spec.template.spec.containers[0].image == NEW_IMAGE
            state = CoreV1Api(client).read_namespaced_config_map(
                "opsctl-rollout-gateway", namespace
            )
            region = json.loads(state.data["region.json"])
            assert region["rollout_id"] == report["id"]
            assert region["phase"] == "done"
            # Only the lead (primary) region holds the rollout record.
            assert ("rollout.json" in state.data) == (plan.region == "ap-east")
