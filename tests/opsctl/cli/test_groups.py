"""How the command groups share options (opsctl/cli/_group.py), and help from the constants."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import click
import pytest
import typer

from opsctl import cli
from opsctl.cli._options import one_prometheus
from opsctl.errors import ExitCode, UserInputError
from tests.support import OpsctlRunner

pytestmark = pytest.mark.unit


def _commands(command: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path of the opsctl tree, groups included."""
    command = command or typer.main.get_command(cli.app)
    yield path
    if isinstance(command, typer.core.TyperGroup):
        ctx = typer.Context(command)
        for name in command.list_commands(ctx):
            yield from _commands(command.get_command(ctx, name), (*path, name))


def _params(path: tuple[str, ...]) -> list[Any]:
    command: Any = typer.main.get_command(cli.app)
    for name in path:
        command = command.get_command(typer.Context(command), name)
    return list(command.params)


ALL = list(_commands())


@pytest.mark.parametrize(
    "argv",
    [
        ("-o", "json", "spec", "validate", "--stack", "prod"),
        ("spec", "validate", "--stack", "prod", "-o", "json"),
        ("--stack", "staging", "spec", "validate", "-s", "prod", "--output", "json"),
    ],
)
def test_global_options_work_before_or_after_the_command(
    opsctl: OpsctlRunner, argv: tuple[str, ...]
) -> None:
    result = opsctl(*argv)
    assert result.exit_code == ExitCode.OK, result.stderr
    assert json.loads(result.stdout)["stack"] == "prod"  # the later one wins


def test_quiet_after_the_command(opsctl: OpsctlRunner) -> None:
    assert opsctl("spec", "validate", "--stack", "prod", "-q").stderr == ""


@pytest.mark.parametrize(
    "argv",
    [
        ("rollout", "--component", "nope", "history"),
        ("rollout", "history", "--component", "nope"),
    ],
)
def test_group_options_work_before_or_after_the_command(
    opsctl: OpsctlRunner, argv: tuple[str, ...]
) -> None:
    result = opsctl(*argv)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "--component: 'nope' is not one of gateway, dispatcher" in result.stderr


def test_help_runs_no_group_callback(opsctl: OpsctlRunner) -> None:
    result = opsctl("rollout", "history", "--component", "nope", "--help")
    assert result.exit_code == ExitCode.OK
    assert "--component" in result.stdout


@pytest.mark.parametrize("path", [p for p in ALL if p], ids=" ".join)
def test_help_renders_every_constant(opsctl: OpsctlRunner, path: tuple[str, ...]) -> None:
    result = opsctl(*path, "--help")
    assert result.exit_code == ExitCode.OK, result.stderr
    assert not re.search(r"\{\w+\.\w+\}", result.stdout), result.stdout


# Flags every option of this name has, wherever it is.
SHARED_FLAGS = {
    "stack": {"--stack", "-s"},
    "output": {"--output", "-o"},
    "infra_dir": {"--infra-dir"},
    "region": {"--region", "-r"},
    "namespace": {"--namespace", "-n"},
    "kubeconfig": {"--kubeconfig"},
    "prometheus_url": {"--prometheus-url"},
    "state_dir": {"--state-dir"},
    "alertmanager_url": {"--alertmanager-url"},
}


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "opsctl")
def test_shared_options_have_the_same_flags_everywhere(path: tuple[str, ...]) -> None:
    for param in _params(path):
        # A positional argument of the same name (`opsctl region evacuate REGION`) is no option.
        if param.name in SHARED_FLAGS and isinstance(param, click.Option):
            assert SHARED_FLAGS[param.name] <= set(param.opts), (path, param.opts)


def test_rollout_keeps_the_old_prometheus_spelling() -> None:
    for command in ("start", "resume"):
        (param,) = [p for p in _params(("rollout", command)) if p.name == "prometheus_url"]
        assert set(param.opts) == {"--prometheus-url", "--prometheus"}


def test_every_command_takes_the_global_options() -> None:
    for path in ALL:
        names = {param.name for param in _params(path)}
        assert {"stack", "output", "infra_dir", "verbose", "quiet"} <= names, path


def _start_request(
    opsctl: OpsctlRunner, monkeypatch: pytest.MonkeyPatch, *flags: str
) -> tuple[Any, Any]:
    from opsctl import rollout

    seen: list[Any] = []

    def start(spec: Any, request: Any, kube: Any, **_: Any) -> Any:
        seen.append(request)
        raise UserInputError("stop here")

    monkeypatch.setattr(rollout, "start", start)
    result = opsctl("rollout", "start", "--stack", "staging", "--image", "0.3.1", *flags)
    assert result.exit_code == ExitCode.BAD_INPUT, result.stderr
    assert "stop here" in result.stderr
    return seen[0], rollout.StartRequest


def test_rollout_start_leaves_every_default_to_start_request(
    opsctl: OpsctlRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    request, start_request = _start_request(opsctl, monkeypatch, "--prometheus", "http://p:9090")
    expected = start_request(stack="staging", image="0.3.1", prometheus=("http://p:9090",))
    assert request == expected
    assert request.drain_window == next(
        f.default for f in fields(start_request) if f.name == "drain_window"
    )


def test_rollout_start_passes_what_was_given(
    opsctl: OpsctlRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    request, _ = _start_request(
        opsctl,
        monkeypatch,
        *("--prometheus-url", "eu-central=http://eu:9090"),
        *("--drain-window", "45s", "--bake", "2m", "--rollback-promoted"),
        *("--component", "dispatcher", "-n", "im-canary"),
    )
    assert request.prometheus == ("eu-central=http://eu:9090",)
    assert (request.drain_window, request.bake, request.rollback_promoted) == ("45s", "2m", True)
    assert (request.component, request.namespace) == ("dispatcher", "im-canary")


def test_rollout_start_help_shows_start_request_defaults(opsctl: OpsctlRunner) -> None:
    from opsctl.rollout import StartRequest

    text = " ".join(opsctl("rollout", "start", "--help").stdout.split())
    for name in ("bake", "interval", "steps", "min_samples", "ready_timeout", "release"):
        default = next(f.default for f in fields(StartRequest) if f.name == name)
        assert f"[default: {default}]" in text, name
    assert "overrides each region's drain window from the stack spec" in text


def test_local_up_help_lists_every_port_name(opsctl: OpsctlRunner) -> None:
    from opsctl.local import DEFAULT_BASE_PORT, Ports

    text = " ".join(opsctl("local", "up", "--help").stdout.split())
    for name in Ports.model_fields:
        assert name in text
    assert f"[default: {DEFAULT_BASE_PORT}]" in text


@pytest.mark.parametrize(
    ("entries", "region", "expected"),
    [
        (["http://p:9090/"], None, "http://p:9090"),
        (["eu=http://eu:9090"], None, "http://eu:9090"),
        (["eu=http://eu:9090", "us=http://us:9090"], "us", "http://us:9090"),
        (["http://p:9090/?a=b"], None, "http://p:9090/?a=b"),
    ],
)
def test_one_prometheus(entries: list[str], region: str | None, expected: str) -> None:
    assert one_prometheus(entries, region=region) == expected


def test_one_prometheus_refuses_to_guess_a_region() -> None:
    with pytest.raises(UserInputError, match="queries one Prometheus"):
        one_prometheus(["eu=http://eu:9090", "us=http://us:9090"])


def test_help_imports_no_domain_module() -> None:
    """`opsctl --help` must stay fast: nothing beyond the CLI, settings and errors loads."""
    code = (
        "import sys\n"
        "from opsctl.cli import run\n"
        "run(['--help'])\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(out.splitlines()[-1].split())
    for heavy in ("opsctl.spec", "opsctl.rollout", "opsctl.local", "pydantic", "rich", "yaml"):
        assert heavy not in loaded


@pytest.mark.unit
@pytest.mark.parametrize(("env_stack", "expected"), [(None, "local"), ("prod", "prod")])
def test_loadtest_url_targets_are_judged_against_the_resolved_stack(
    tmp_path: pathlib.Path,
    env_stack: str | None,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--stack and --target exclude each other, so a URL target takes the resolved stack."""
    from opsctl.cli._options import RootOptions
    from opsctl.cli.loadtest import _Signing, _target

    monkeypatch.setenv("OPSCTL_CONFIG", "/nonexistent/opsctl-config.toml")
    if env_stack is None:
        monkeypatch.delenv("OPSCTL_STACK", raising=False)
    else:
        monkeypatch.setenv("OPSCTL_STACK", env_stack)
    secret = tmp_path / "secret"
    secret.write_text("s" * 32)
    target = _target(
        RootOptions(),
        target=["ws://127.0.0.1:1/ws"],
        region=None,
        signing=_Signing(secret_file=secret, issuer="iss", audience="aud"),
    )
    assert target.stack_slos().stack == expected
