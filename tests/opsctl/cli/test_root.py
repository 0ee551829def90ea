"""The root command: help, version, usage errors, completion and quiet mode."""

from __future__ import annotations

import pytest

from opsctl import __version__
from opsctl.cli._options import _complete_stack
from opsctl.errors import ExitCode
from tests.support import OpsctlRunner

pytestmark = pytest.mark.unit


def test_help_lists_the_command_groups(opsctl: OpsctlRunner) -> None:
    result = opsctl("--help")
    assert result.exit_code == ExitCode.OK
    for group in ("spec", "demo"):
        assert group in result.stdout


def test_version(opsctl: OpsctlRunner) -> None:
    result = opsctl("--version")
    assert (result.exit_code, result.stdout.strip()) == (0, f"opsctl {__version__}")


@pytest.mark.parametrize(
    "argv",
    [("no-such-command",), ("spec", "validate", "--no-such-flag"), ("--output", "xml", "spec")],
)
def test_usage_errors_exit_2(opsctl: OpsctlRunner, argv: tuple[str, ...]) -> None:
    result = opsctl(*argv)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "Traceback" not in result.stderr


def test_quiet_silences_messages_but_not_errors(opsctl: OpsctlRunner) -> None:
    assert opsctl("-q", "spec", "validate", "--stack", "prod").stderr == ""
    assert "not found" in opsctl("-q", "spec", "validate", "--stack", "qa").stderr


def test_stack_completion_offers_shipped_stacks() -> None:
    assert _complete_stack("") == ["local", "prod", "staging"]
    assert _complete_stack("st") == ["staging"]


def test_completion_script_is_available(opsctl: OpsctlRunner) -> None:
    result = opsctl("--show-completion", "bash")
    assert result.exit_code == ExitCode.OK
    assert "_OPSCTL_COMPLETE" in result.stdout
