"""The host-limits file: the one source of numbers for the roles and for loadtest preflight."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from opsctl.errors import ExitCode, InvalidInputFile, UserInputError
from opsctl.hostlimits import LIMITS_FILE, Scope, load_limits

pytestmark = pytest.mark.unit


def shipped() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(LIMITS_FILE.read_text())
    return data


def problems_of(tmp_path: Path, document: dict[str, Any]) -> list[str]:
    path = tmp_path / "limits.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(InvalidInputFile) as caught:
        load_limits(path)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


def test_shipped_profiles_give_preflight_its_numbers() -> None:
    limits = load_limits()
    assert sorted(limits.profiles) == ["gateway_node", "loadgen_host"]
    loadgen = limits.profile("loadgen_host")
    assert loadgen.nofile == 1048576
    assert (loadgen.ephemeral_ports.low, loadgen.ephemeral_ports.high) == (1024, 65535)
    assert loadgen.ephemeral_ports.count == 64512
    assert loadgen.conntrack_max == 2097152
    assert loadgen.memory_per_connection_bytes == 64 * 1024
    assert loadgen.connections_for_memory(64 * 1024 * 1000) == 1000
    gateway = limits.profile("gateway_node")
    assert gateway.ephemeral_ports.low == 10240
    assert gateway.nofile <= gateway.nr_open <= gateway.file_max


def test_sysctls_keep_the_kernel_scope_the_roles_rely_on() -> None:
    gateway = load_limits().profile("gateway_node")
    assert gateway.sysctl("net.core.somaxconn").scope is Scope.netns
    assert gateway.sysctl("fs.file-max").scope is Scope.host
    assert gateway.scoped(Scope.host)["net.ipv4.tcp_mem"] == "1572864 2097152 3145728"
    assert gateway.sysctl("net.ipv4.tcp_rmem").numbers() == (4096, 16384, 4194304)


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(UserInputError) as caught:
        load_limits().profile("gateway")
    assert "unknown host-limits profile 'gateway'" in caught.value.message
    assert caught.value.hint is not None
    assert "gateway_node" in caught.value.hint


def test_reversed_port_range_is_named_with_its_field(tmp_path: Path) -> None:
    document = shipped()
    document["profiles"]["loadgen_host"]["sysctls"]["netns"]["net.ipv4.ip_local_port_range"] = (
        "65535 1024"
    )
    assert problems_of(tmp_path, document) == [
        "profiles.loadgen_host.sysctls.netns.net.ipv4.ip_local_port_range: "
        "'65535 1024' must be low < high within 1-65535"
    ]


def test_nofile_above_nr_open_is_refused(tmp_path: Path) -> None:
    document = shipped()
    document["profiles"]["gateway_node"]["nofile"] = 4_000_000
    problems = problems_of(tmp_path, document)
    assert problems == [
        "profiles.gateway_node.nofile: 4000000 exceeds fs.nr_open 2097152; the kernel refuses it"
    ]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["profiles"]["gateway_node"].update(nofiles=1),
            "profiles.gateway_node.nofiles: unknown field",
        ),
        (
            lambda d: d["profiles"]["gateway_node"]["sysctls"]["host"].pop("fs.nr_open"),
            "profiles.gateway_node.sysctls.host: missing fs.nr_open",
        ),
        (
            lambda d: d["profiles"]["gateway_node"]["sysctls"]["netns"].update(
                {"net.core.somaxconn": "lots"}
            ),
            "profiles.gateway_node.sysctls.netns.net.core.somaxconn: must be an integer",
        ),
        (
            lambda d: d["profiles"]["gateway_node"].update(kernel_modules=["nf conntrack"]),
            "profiles.gateway_node.kernel_modules[0]: 'nf conntrack' is not a kernel module",
        ),
        (lambda d: d.update(version=2), "version: must be 1, got 2"),
        (
            lambda d: d["profiles"]["gateway_node"]["sysctls"]["netns"].update({"fs.file-max": 1}),
            "profiles.gateway_node.sysctls.host.fs.file-max: set under both netns and host",
        ),
    ],
)
def test_bad_limits_files_name_the_field(tmp_path: Path, mutate: Any, expected: str) -> None:
    document = shipped()
    mutate(document)
    problems = problems_of(tmp_path, document)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_yaml_errors_carry_the_line(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("version: 1\nprofiles:\n  a: [\n")
    with pytest.raises(InvalidInputFile) as caught:
        load_limits(path)
    assert caught.value.problems[0].line is not None


def test_required_sysctl_in_the_wrong_scope_is_named(tmp_path: Path) -> None:
    document = shipped()
    netns = document["profiles"]["gateway_node"]["sysctls"]["netns"]
    host = document["profiles"]["gateway_node"]["sysctls"]["host"]
    host["net.ipv4.ip_local_port_range"] = netns.pop("net.ipv4.ip_local_port_range")
    problems = problems_of(tmp_path, document)
    assert (
        "profiles.gateway_node.sysctls.host.net.ipv4.ip_local_port_range: belongs under 'netns'"
        in problems
    )
