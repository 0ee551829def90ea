"""node_tuning and loadgen_host for real, over SSH, on network-namespace hosts.

Per-namespace sysctls and addresses are applied for real inside the namespaces; host-global
settings run in check mode with --diff; files go to a per-host scratch root, never /etc.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsctl.hostlimits import Scope, load_limits
from tests.playbooks.netns_hosts import (
    HOST_SYSCTLS,
    NETNS_SYSCTLS,
    SESSION_NOFILE,
    SOURCE_INTERFACE,
    NetnsLab,
    PlaybookRun,
    host_sysctl,
    in_netns,
    netns_lab,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SOURCE_ADDRESSES = ["10.77.0.11/24", "10.77.0.12/24"]
MASTER = "10.77.0.1"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsLab]:
    workdir = tmp_path_factory.mktemp("netns-lab")
    with netns_lab(workdir, {"gw1": ("gateway_nodes",), "lg1": ("loadgen_hosts",)}) as created:
        yield created


@pytest.fixture(scope="module")
def host_globals() -> Iterator[dict[str, str]]:
    """The machine's own host-global values: must be the same after every test."""
    before = {key: host_sysctl(key) for key in HOST_SYSCTLS}
    yield before
    assert {key: host_sysctl(key) for key in HOST_SYSCTLS} == before


def hostvars(lab: NetnsLab, root: str = "root", **overrides: Any) -> dict[str, dict[str, Any]]:
    gateway, loadgen = lab.hosts["gw1"], lab.hosts["lg1"]
    gateway_root = str(gateway.workdir / root)
    loadgen_root = str(loadgen.workdir / root)
    return {
        "gw1": {
            "node_tuning_root_dir": gateway_root,
            "node_tuning_apply_global": False,
            "kubelet_sysctls_root_dir": gateway_root,
            **{k: v for k, v in overrides.items() if not k.startswith("loadgen_host_")},
        },
        "lg1": {
            "loadgen_host_root_dir": loadgen_root,
            "loadgen_host_apply_global": False,
            "loadgen_host_manage_services": False,
            "loadgen_host_source_interface": SOURCE_INTERFACE,
            "loadgen_host_source_addresses": SOURCE_ADDRESSES,
            "loadgen_host_locust_master_host": MASTER,
            **{k: v for k, v in overrides.items() if k.startswith("loadgen_host_")},
        },
    }


def netns_state(lab: NetnsLab) -> dict[str, Any]:
    return {
        name: {
            "sysctls": {key: host.sysctl(key) for key in NETNS_SYSCTLS},
            "addresses": host.addresses(SOURCE_INTERFACE),
        }
        for name, host in lab.hosts.items()
    }


def assert_ok(run: PlaybookRun) -> None:
    assert run.returncode == 0, run.explain()
    assert all(counts["failed"] == 0 for counts in run.recap().values()), run.explain()


def test_converge_then_idempotent_then_verified(
    lab: NetnsLab, tmp_path: Path, host_globals: dict[str, str]
) -> None:
    inventory = lab.inventory(tmp_path / "hosts.yml", hostvars(lab))
    gateway_profile = load_limits().profile("gateway_node")
    loadgen_profile = load_limits().profile("loadgen_host")

    # 1. Converge: everything changes the first time.
    converge = lab.playbook("site.yml", inventory)
    assert_ok(converge)
    recap = converge.recap()
    assert recap["gw1"]["changed"] > 0
    assert recap["lg1"]["changed"] > 0
    gateway, loadgen = lab.hosts["gw1"], lab.hosts["lg1"]
    for key, value in gateway_profile.scoped(Scope.netns).items():
        assert gateway.sysctl(key) == value, key
    for key, value in loadgen_profile.scoped(Scope.netns).items():
        assert loadgen.sysctl(key) == value, key
    assert loadgen.sysctl("net.ipv4.ip_local_port_range") == "1024 65535"
    assert set(SOURCE_ADDRESSES) <= set(loadgen.addresses(SOURCE_INTERFACE))
    gateway_files = gateway.files()
    assert "* hard nofile 1048576" in gateway_files["etc/security/limits.d/90-im-host-limits.conf"]
    assert "fs.nr_open = 2097152" in gateway_files["etc/sysctl.d/90-im-host-limits.conf"]
    assert (
        "LimitNOFILE=1048576"
        in gateway_files["etc/systemd/system/k3s-agent.service.d/90-im-host-limits.conf"]
    )
    allowlist = gateway_files["etc/rancher/k3s/config.yaml.d/50-im-allowed-unsafe-sysctls.yaml"]
    assert "net.core.somaxconn" in allowlist
    assert "fs.file-max" not in allowlist
    unit = loadgen.files()["etc/systemd/system/im-locust-worker@.service"]
    assert f"--worker --master-host {MASTER} --master-port 5557" in unit
    assert "IM_LOADGEN_SOURCE_ADDRESSES=10.77.0.11,10.77.0.12" in unit

    # 2. Idempotence: a second run changes nothing.
    second = lab.playbook("site.yml", inventory)
    assert_ok(second)
    assert {host: counts["changed"] for host, counts in second.recap().items()} == {
        "gw1": 0,
        "lg1": 0,
    }, second.explain()

    # 3. Verify reads the values back from the hosts and passes...
    verify = lab.playbook("verify_host_limits.yml", inventory)
    assert_ok(verify)
    assert "net.core.somaxconn = 65535" in verify.stdout

    # ...and fails, naming the value, when a host drifts.
    in_netns(gateway.netns, "sysctl", "-w", "net.core.somaxconn=1000")
    drifted = lab.playbook("verify_host_limits.yml", inventory)
    assert drifted.returncode != 0
    assert "net.core.somaxconn is '1000' on gw1, the profile wants '65535'" in drifted.stdout
    repaired = lab.playbook("gateway_nodes.yml", inventory)
    assert_ok(repaired)
    assert repaired.recap()["gw1"]["changed"] == 1
    assert gateway.sysctl("net.core.somaxconn") == "65535"


def test_check_mode_shows_host_global_changes_and_makes_none(
    lab: NetnsLab, tmp_path: Path, host_globals: dict[str, str]
) -> None:
    root = "check-root"
    variables = hostvars(lab, root, node_tuning_apply_global=True, loadgen_host_apply_global=True)
    inventory = lab.inventory(tmp_path / "hosts.yml", variables)
    before = netns_state(lab)

    check = lab.playbook("site.yml", inventory, "--check", "--diff")

    assert_ok(check)
    assert check.recap()["gw1"]["changed"] > 0
    # The diff of the files, and the host-global sysctls a real run would set.
    assert "+fs.file-max = 4194304" in check.stdout
    assert "+DefaultLimitNOFILE=1048576:1048576" in check.stdout
    assert "+nf_conntrack" in check.stdout
    if host_globals["fs.file-max"] != "4194304":
        report = re.search(r"would set (.*) \(now (.*)\)", check.stdout)
        assert report is not None, check.explain()
        assert "fs.file-max=4194304" in report[1].split(", ")
        assert f"fs.file-max={host_globals['fs.file-max']}" in report[2].split(", ")
    # Nothing happened: no files, no namespace changes (and host_globals checks the machine).
    assert not (lab.hosts["gw1"].workdir / root).exists()
    assert not (lab.hosts["lg1"].workdir / root).exists()
    assert netns_state(lab) == before


BAD_INPUTS = [
    pytest.param(
        "gateway_nodes.yml",
        {"node_tuning_sysctl_overrides": {"net.ipv4.ip_local_port_range": "65000 1024"}},
        "net.ipv4.ip_local_port_range '65000 1024' is not a port range",
        id="reversed-port-range",
    ),
    pytest.param(
        "gateway_nodes.yml",
        {"node_tuning_nofile": 4096},
        f"node_tuning_nofile 4096 is below the host's current hard limit {SESSION_NOFILE}",
        id="nofile-below-current",
    ),
    pytest.param(
        "gateway_nodes.yml",
        {"node_tuning_nofile": 4194304},
        "node_tuning_nofile 4194304 exceeds fs.nr_open 2097152",
        id="nofile-above-nr-open",
    ),
    pytest.param(
        "gateway_nodes.yml",
        {"node_tuning_aply_global": True},
        "unknown variable(s) node_tuning_aply_global; node_tuning knows",
        id="unknown-role-flag",
    ),
    pytest.param(
        "gateway_nodes.yml",
        {"node_tuning_apply_global": "false"},
        "must be true or false, not strings",
        id="flag-as-string",
    ),
    pytest.param(
        "gateway_nodes.yml",
        {"node_tuning_sysctl_overrides": {"net.core.rmem_max": 1}},
        "node_tuning_sysctl_overrides sets net.core.rmem_max, which profile gateway_node does not",
        id="unknown-sysctl-override",
    ),
    pytest.param(
        "gateway_nodes.yml",
        {"node_tuning_profile": "gateway"},
        "node_tuning_profile 'gateway' is not in",
        id="unknown-profile",
    ),
    pytest.param(
        "loadgen_hosts.yml",
        {"loadgen_host_source_addresses": ["10.77.0.300/24"]},
        "source address '10.77.0.300/24' is not an IPv4 address in CIDR form",
        id="bad-source-address",
    ),
    pytest.param(
        "loadgen_hosts.yml",
        {"loadgen_host_source_adresses": ["10.77.0.13/24"]},
        "unknown variable(s) loadgen_host_source_adresses; loadgen_host knows",
        id="loadgen-unknown-flag",
    ),
]


@pytest.mark.parametrize(("playbook", "bad", "message"), BAD_INPUTS)
def test_impossible_values_fail_in_an_assert_before_any_change(
    lab: NetnsLab,
    tmp_path: Path,
    host_globals: dict[str, str],
    *,
    playbook: str,
    bad: dict[str, Any],
    message: str,
) -> None:
    root = f"bad-{hashlib.sha1(repr(bad).encode()).hexdigest()[:8]}"
    inventory = lab.inventory(tmp_path / "hosts.yml", hostvars(lab, root, **bad))
    before = netns_state(lab)

    run = lab.playbook(playbook, inventory)

    assert run.returncode == 2, run.explain()
    assert message in run.stdout + run.stderr, run.explain()
    assert "ansible.builtin.assert" in run.stdout + run.stderr or "assertion" in run.stdout
    failed_host = "gw1" if playbook == "gateway_nodes.yml" else "lg1"
    assert run.recap()[failed_host]["failed"] == 1
    assert run.recap()[failed_host]["changed"] == 0
    assert not (lab.hosts[failed_host].workdir / root).exists()
    assert netns_state(lab) == before


def k3s_vars(lab: NetnsLab, tmp_path: Path, **overrides: Any) -> dict[str, dict[str, Any]]:
    binary = tmp_path / "k3s-mirror"
    binary.write_bytes(b"#!/bin/sh\necho k3s stand-in for check mode\n")
    return {
        "gw1": {
            "k8s_bootstrap_root_dir": str(lab.hosts["gw1"].workdir / "k3s-root"),
            "k8s_bootstrap_manage_service": False,
            "k8s_bootstrap_k3s_binary_src": str(binary),
            "k8s_bootstrap_k3s_sha256": hashlib.sha256(binary.read_bytes()).hexdigest(),
            "k8s_bootstrap_token": "t" * 40,
            **overrides,
        }
    }


def test_k8s_bootstrap_check_mode_renders_the_first_server(
    lab: NetnsLab, tmp_path: Path, host_globals: dict[str, str]
) -> None:
    gateway = lab.hosts["gw1"]
    gateway.groups = ("k8s_servers", "gateway_nodes")
    try:
        inventory = lab.inventory(tmp_path / "hosts.yml", k3s_vars(lab, tmp_path))
        check = lab.playbook("k8s_cluster.yml", inventory, "--check", "--diff")
        mismatch = lab.inventory(
            tmp_path / "bad.yml", k3s_vars(lab, tmp_path, k8s_bootstrap_k3s_sha256="0" * 64)
        )
        bad = lab.playbook("k8s_cluster.yml", mismatch, "--check")
    finally:
        gateway.groups = ("gateway_nodes",)
    assert_ok(check)
    assert check.recap()["gw1"]["changed"] > 0
    assert "+cluster-init: true" in check.stdout
    assert '+node-label: ["im.platform/pool=gateway"]' in check.stdout
    assert "+ExecStart=/usr/local/bin/k3s server" in check.stdout
    assert not (gateway.workdir / "k3s-root").exists()
    assert bad.returncode == 2
    assert "not the pinned 0000" in bad.stdout
