"""Preflight against host limits, and the on-cluster Job manifests (pure parts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsctl.hostlimits import load_limits
from opsctl.loadtest.oncluster import RunShape, build_manifests, loadtest_image
from opsctl.loadtest.preflight import check_host
from opsctl.loadtest.profiles import load_profile
from opsctl.loadtest.sizing import size_run

pytestmark = pytest.mark.unit


def _proc_sys(tmp_path: Path, ports: str, conntrack: int | None) -> Path:
    root = tmp_path / "sys"
    (root / "net/ipv4").mkdir(parents=True)
    (root / "net/ipv4/ip_local_port_range").write_text(ports + "\n")
    if conntrack is not None:
        (root / "net/netfilter").mkdir(parents=True)
        (root / "net/netfilter/nf_conntrack_max").write_text(f"{conntrack}\n")
    return root


def test_a_small_host_is_told_what_to_change(tmp_path: Path) -> None:
    limits = load_limits().profile("loadgen_host")
    report = check_host(
        load_profile("peak"),  # 5000 users
        proc_sys=_proc_sys(tmp_path, "32768 34999", 1000),
        nofile=1024,
        memory_bytes=100 * 2**20,
    )
    assert not report.ok
    checks = {c.name: c for c in report.checks}
    assert not checks["open files per worker"].ok
    assert f"ulimit -n {limits.nofile}" in checks["open files per worker"].fix
    assert not checks["ephemeral ports (per target address)"].ok
    assert str(limits.ephemeral_ports) in checks["ephemeral ports (per target address)"].fix
    assert not checks["conntrack entries"].ok
    assert str(limits.conntrack_max) in checks["conntrack entries"].fix
    assert not checks["memory for connections"].ok  # 5000 x 64 KiB > 100 MiB
    assert checks["memory for connections"].needed.startswith(
        f">= {5000 * limits.memory_per_connection_bytes // 2**20} MiB"
    )


def test_a_tuned_host_passes(tmp_path: Path) -> None:
    report = check_host(
        load_profile("peak"),
        workers=2,
        proc_sys=_proc_sys(tmp_path, "1024 65535", None),  # no conntrack module: nothing tracked
        nofile=1048576,
        memory_bytes=8 * 2**30,
    )
    assert report.ok, report.as_dict()


def _manifests(workers: int = 3) -> list[dict]:
    profile = load_profile("smoke")
    return build_manifests(
        run="lt-abc",
        profile_text="name: smoke\n",
        target_urls=["wss://gateway.eu.prod.im.internal/ws"],
        image=loadtest_image("registry.im.internal/im/gateway:0.1.0"),
        sizing=size_run(profile, workers=workers),
        shape=RunShape.of(profile),
    )


def test_manifests_are_a_master_and_worker_jobs() -> None:
    manifests = _manifests()
    kinds = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    assert kinds == [
        ("ConfigMap", "lt-abc-profile"),
        ("ConfigMap", "lt-abc-results"),
        ("ServiceAccount", "lt-abc-master"),
        ("Role", "lt-abc-master"),
        ("RoleBinding", "lt-abc-master"),
        ("Service", "lt-abc-master"),
        ("Job", "lt-abc-master"),
        ("Job", "lt-abc-worker"),
    ]
    by_kind = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    worker = by_kind[("Job", "lt-abc-worker")]["spec"]
    assert worker["parallelism"] == worker["completions"] == 3
    container = worker["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.im.internal/im/loadtest:0.1.0"
    assert "--master-host=lt-abc-master.im-loadtest.svc" in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LOADTEST_JWT_SECRET_FILE"] == "/etc/loadtest/jwt/secret"
    assert "LOADTEST_RESULTS_CONFIGMAP" not in env  # workers never talk to the API
    assert all("secret" not in (v or "").lower() or v.startswith("/etc") for v in env.values())
    assert worker["template"]["spec"]["automountServiceAccountToken"] is False
    master_job = by_kind[("Job", "lt-abc-master")]["spec"]["template"]
    master = master_job["spec"]["containers"][0]
    assert "--expect-workers=3" in master["args"]
    assert master_job["spec"]["serviceAccountName"] == "lt-abc-master"
    assert (
        by_kind[("Service", "lt-abc-master")]["spec"]["selector"]
        == master_job["metadata"]["labels"]
    )


def test_the_master_may_patch_only_its_results() -> None:
    role = next(m for m in _manifests() if m["kind"] == "Role")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["lt-abc-results"],
            "verbs": ["get", "patch"],
        }
    ]


def test_pods_run_non_root_on_a_read_only_root() -> None:
    for job in (m for m in _manifests() if m["kind"] == "Job"):
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert "cpu" not in container["resources"]["limits"]  # no throttling
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
