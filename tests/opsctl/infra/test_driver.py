"""opsctl infra's checks, which all run before Pulumi is touched (no pulumi CLI here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer

from opsctl.errors import ExitCode, OpsctlError, ToolMissing
from opsctl.infra import ENV_PULUMI_BIN, Operation, find_pulumi, prepare, resolve_config
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


@pytest.mark.usefixtures("no_pulumi")
@pytest.mark.parametrize("operation", ["preview", "up", "refresh", "outputs"])
def test_every_command_names_the_missing_cli(operation: str) -> None:
    code, message = _run("infra", operation, "--stack", "local")
    assert code == int(ToolMissing.exit_code)
    assert "pulumi CLI is not installed" in message


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
    config = resolve_config(stack="local", infra_dir=DEFAULT_INFRA_DIR, policy=False, env=env)
    pulumi_bin, spec = prepare(config, Operation.outputs)
    assert pulumi_bin == fake_pulumi
    assert spec.regions[0].name == "local"
