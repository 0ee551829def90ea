"""opsctl infra's checks, which all run before the Pulumi engine is touched (fake tools)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer

from opsctl.errors import ExitCode, OpsctlError, ToolMissing
from opsctl.infra import (
    ENV_PULUMI_BIN,
    Operation,
    find_pulumi,
    prepare,
    pulumi_home,
    resolve_config,
)
from opsctl.infra._driver import provider_plugin
from opsctl.paths import DEFAULT_INFRA_DIR
from tests.infra._mocks import write_kubeconfig

pytestmark = pytest.mark.unit


@pytest.fixture
def no_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("OPSCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(ENV_PULUMI_BIN, raising=False)
    monkeypatch.setenv("OPSCTL_CONFIG", "/nonexistent/opsctl-config.toml")
    monkeypatch.setenv("OPSCTL_NO_TOOL_BUILD", "1")  # never start a Go build from a unit test
    for name in ("OPSCTL_STACK", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_pulumi: None) -> Path:
    """An executable named pulumi, so the checks after the CLI lookup run (never executed)."""
    path = tmp_path / "bin" / "pulumi"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 99\n")
    path.chmod(0o755)
    monkeypatch.setenv(ENV_PULUMI_BIN, str(path))
    return path


def _run(*args: str) -> tuple[int, str]:
    """The infra group on its own app, errors mapped to exit codes as opsctl.cli.run does."""
    from opsctl.cli import infra

    app = typer.Typer()
    app.add_typer(infra.app, name="infra")
    try:
        typer.main.get_command(app).main(list(args), prog_name="opsctl", standalone_mode=False)
    except OpsctlError as error:
        problems = getattr(error, "problems", [])
        return int(error.exit_code), " | ".join(
            [error.message, *map(str, problems), error.hint or ""]
        )
    return 0, ""


@pytest.mark.usefixtures("no_pulumi")
def test_missing_pulumi_cli_is_a_documented_tool_error() -> None:
    with pytest.raises(ToolMissing) as caught:
        find_pulumi()
    assert "pulumi CLI is not installed" in caught.value.message
    assert ENV_PULUMI_BIN in (caught.value.hint or "")


@pytest.mark.parametrize("operation", ["preview", "up", "refresh", "drift", "outputs"])
def test_every_command_names_the_missing_cli(
    operation: str, no_pulumi: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "config", ["kwok-local"])
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "x")
    code, message = _run("infra", operation, "--stack", "local", "--kubeconfig", str(kubeconfig))
    assert code == int(ToolMissing.exit_code)
    assert "not built yet: pulumi" in message
    assert "make setup-cluster" in message


def test_a_missing_cli_is_built_on_first_use(
    no_pulumi: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[list[str]] = []

    def build(names: list[str]) -> None:
        built.append(list(names))
        for name in names:
            target = find_pulumi_target() if name == "pulumi" else None
            if target is not None:
                target.parent.mkdir(parents=True)
                target.write_text("#!/bin/sh\n")
                target.chmod(0o755)

    assert find_pulumi(build=build) == find_pulumi_target()
    assert built == [["pulumi"]]


def find_pulumi_target() -> Path:
    from opsctl.cluster._tools import pinned_path, pinned_versions

    return pinned_path("pulumi", pinned_versions())


@pytest.mark.usefixtures("fake_pulumi")
def test_missing_provider_plugin_names_the_setup_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "config", ["kwok-local"])
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "x")
    code, message = _run("infra", "preview", "--stack", "local", "--kubeconfig", str(kubeconfig))
    assert code == int(ToolMissing.exit_code)
    assert "pulumi-resource-kubernetes" in message
    assert str(provider_plugin(pulumi_home())) in message or "not built yet" in message


@pytest.mark.usefixtures("fake_pulumi")
def test_a_policy_pack_that_is_not_one_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "config", ["kwok-local"])
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "x")
    code, message = _run(
        "infra",
        "preview",
        "--stack",
        "local",
        "--kubeconfig",
        str(kubeconfig),
        "--policy-pack",
        str(tmp_path),
    )
    assert code == ExitCode.BAD_INPUT
    assert "not a policy pack" in message


@pytest.mark.usefixtures("fake_pulumi")
def test_missing_kube_context_exits_2_naming_the_field(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "config", ["some-other-context"])
    code, message = _run("infra", "preview", "--stack", "local", "--kubeconfig", str(kubeconfig))
    assert code == ExitCode.BAD_INPUT
    assert "regions[0].kubeContext" in message
    assert "kwok-local" in message


@pytest.mark.usefixtures("fake_pulumi")
def test_passphrase_is_required_for_the_default_secrets_provider(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "config", ["kwok-local"])
    code, message = _run("infra", "preview", "--stack", "local", "--kubeconfig", str(kubeconfig))
    assert code == ExitCode.BAD_INPUT
    assert "PULUMI_CONFIG_PASSPHRASE" in message


@pytest.mark.usefixtures("fake_pulumi")
def test_destroy_needs_yes() -> None:
    code, message = _run("infra", "destroy", "--stack", "local")
    assert code == ExitCode.BAD_INPUT
    assert "--yes" in message


def test_defaults_are_a_local_file_backend_and_passphrase() -> None:
    config = resolve_config(stack="local", infra_dir=DEFAULT_INFRA_DIR, env={})
    assert config.backend_url.startswith("file://")
    assert config.backend_url.endswith("/.state/pulumi")
    assert config.secrets_provider == "passphrase"
    custom = resolve_config(
        stack="local",
        infra_dir=DEFAULT_INFRA_DIR,
        env={
            "OPSCTL_PULUMI_BACKEND_URL": "s3://bucket",
            "OPSCTL_PULUMI_SECRETS_PROVIDER": "awskms://k",
        },
    )
    assert (custom.backend_url, custom.secrets_provider) == ("s3://bucket", "awskms://k")
    flag = resolve_config(
        stack="local", infra_dir=DEFAULT_INFRA_DIR, backend_url="file:///x", env=dict(os.environ)
    )
    assert flag.backend_url == "file:///x"


def test_outputs_do_not_need_a_cluster(fake_pulumi: Path, tmp_path: Path) -> None:
    env = {
        ENV_PULUMI_BIN: str(fake_pulumi),
        "PULUMI_CONFIG_PASSPHRASE": "x",
        "KUBECONFIG": str(tmp_path / "none"),
        "OPSCTL_PULUMI_BACKEND_URL": "s3://b",
    }
    config = resolve_config(stack="local", infra_dir=DEFAULT_INFRA_DIR, env=env)
    engine = prepare(config, Operation.outputs)
    assert engine.pulumi == fake_pulumi
    assert engine.spec.regions[0].name == "local"
    assert engine.pulumi_home == pulumi_home()
