"""Preflight against host limits, and the on-cluster Job manifests (pure parts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsctl.hostlimits import load_limits
from opsctl.loadtest.oncluster import build_manifests, loadtest_image
from opsctl.loadtest.preflight import check_host
from opsctl.loadtest.profiles import load_profile

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


def test_manifests_are_a_master_and_worker_jobs() -> None:
    profile = load_profile("smoke")
    manifests = build_manifests(
        run="lt-abc",
        profile=profile,
        profile_text="name: smoke\n",
        target_urls=["wss://gateway.eu.prod.im.internal/ws"],
        image=loadtest_image("registry.im.internal/im/gateway:0.1.0"),
        workers=3,
    )
    kinds = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    assert kinds == [
        ("ConfigMap", "lt-abc-profile"),
        ("Service", "lt-abc-master"),
        ("Job", "lt-abc-master"),
        ("Job", "lt-abc-worker"),
    ]
    worker = manifests[3]["spec"]
    assert worker["parallelism"] == worker["completions"] == 3
    container = worker["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.im.internal/im/loadtest:0.1.0"
    assert "--master-host=lt-abc-master" in container["args"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LOADTEST_JWT_SECRET_FILE"] == "/etc/loadtest/jwt/secret"
    assert all("secret" not in v.lower() or v.startswith("/etc") for v in env.values())
    master = manifests[2]["spec"]["template"]["spec"]["containers"][0]
    assert "--expect-workers=3" in master["args"]
    assert (
        manifests[1]["spec"]["selector"] == manifests[2]["spec"]["template"]["metadata"]["labels"]
    )
