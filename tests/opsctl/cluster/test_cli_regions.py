"""opsctl cluster up | status | down end to end on real processes: three regions with the prod
spec's contexts, each a working cluster, and nothing left running after `down`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil
import pytest
from kubernetes.client import CoreV1Api
from kubernetes.config import new_client_from_config

from opsctl.cluster import ZONE_LABEL, plan_clusters
from opsctl.cluster.kwok import KwokClusters
from opsctl.errors import ExitCode
from opsctl.paths import DEFAULT_INFRA_DIR
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration


def processes_under(directory: Path) -> list[int]:
    marker = str(directory)
    return [
        process.pid
        for process in psutil.process_iter(["pid", "cmdline"])
        if any(marker in argument for argument in process.info.get("cmdline") or [])
    ]


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("OPSCTL_CLUSTER_STATE_DIR", str(state))
    return state


def test_three_regions_up_status_down(opsctl: OpsctlRunner, state_dir: Path) -> None:
    prod = plan_clusters(DEFAULT_INFRA_DIR, "prod")
    try:
        result = opsctl("cluster", "up", "--regions", "3", "--output", "json")
        assert result.exit_code == ExitCode.OK, result.stderr
        report = json.loads(result.stdout)
        assert [c["context"] for c in report["clusters"]] == [p.context for p in prod]
        assert all(c["healthy"] and c["readyNodes"] == 9 for c in report["clusters"])
        kubeconfig = Path(report["kubeconfig"])
        assert kubeconfig.parent == state_dir.resolve()

        for plan in prod:
            client = new_client_from_config(config_file=str(kubeconfig), context=plan.context)
            with client:
                nodes = CoreV1Api(client).list_node().items
            zones = {(n.metadata.labels or {}).get(ZONE_LABEL) for n in nodes if n.metadata}
            assert zones == set(plan.zones)

        # Every component runs from the state dir; kwokctl kept none of them attached to us.
        clusters = KwokClusters(state_dir)
        for plan in prod:
            assert len(clusters.cluster_processes(plan.name)) >= 5  # etcd, apiserver, kcm, ...

        again = opsctl("cluster", "up", "--regions", "3", "--output", "json")
        assert again.exit_code == ExitCode.OK, again.stderr
        assert [c["apiserver"] for c in json.loads(again.stdout)["clusters"]] == [
            c["apiserver"] for c in report["clusters"]
        ]  # healthy clusters are reused, not recreated

        status = opsctl("cluster", "status", "-o", "json")
        assert status.exit_code == ExitCode.OK, status.stderr
        assert {c["context"] for c in json.loads(status.stdout)["clusters"]} == {
            p.context for p in prod
        }
    finally:
        down = opsctl("cluster", "down")
    assert down.exit_code == ExitCode.OK, down.stderr
    assert processes_under(state_dir) == []
    pgrep = subprocess.run(["pgrep", "-f", str(state_dir)], capture_output=True, check=False)
    assert pgrep.stdout == b""
    assert KwokClusters(state_dir).names() == []
    status = opsctl("cluster", "status", "-o", "json")
    assert json.loads(status.stdout)["clusters"] == []


def test_status_reports_a_stopped_cluster_and_exits_1(
    opsctl: OpsctlRunner, state_dir: Path
) -> None:
    try:
        assert opsctl("cluster", "up").exit_code == ExitCode.OK
        clusters = KwokClusters(state_dir)
        processes = [psutil.Process(pid) for pid in clusters.cluster_processes("local")]
        assert processes
        for process in processes:
            process.kill()
        psutil.wait_procs(processes, timeout=10)
        result = opsctl("cluster", "status", "-o", "json")
        assert result.exit_code == ExitCode.FAILED
        (cluster,) = json.loads(result.stdout)["clusters"]
        assert cluster["context"] == "kwok-local"
        assert cluster["healthy"] is False
        assert "stopped" in cluster["problem"]
        # `up` replaces the broken cluster with a working one.
        assert opsctl("cluster", "up").exit_code == ExitCode.OK
        assert opsctl("cluster", "status").exit_code == ExitCode.OK
    finally:
        assert opsctl("cluster", "down").exit_code == ExitCode.OK
    assert processes_under(state_dir) == []
