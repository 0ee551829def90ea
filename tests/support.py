"""Shared test helpers (not fixtures): running opsctl, requiring real tools, waiting."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.poll import WaitTimeout, wait_until

T = TypeVar("T")

SpecWriter = Callable[[dict[str, Any]], Path]


def shipped_spec(stack: str) -> dict[str, Any]:
    """A deep copy of a shipped stack's spec mapping, to mutate in tests."""
    document = yaml.safe_load((DEFAULT_INFRA_DIR / f"Pulumi.{stack}.yaml").read_text())
    return copy.deepcopy(document["config"]["imstack:spec"])


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


class OpsctlRunner:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *args: str) -> Result:
        from opsctl import console
        from opsctl.cli import run

        self._capsys.readouterr()
        try:
            code = run(list(args))
        finally:
            console.verbosity = 0
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)


def require_tool(name: str) -> str:
    """The path of a required tool; a missing one fails the test (CI must not skip)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"required tool '{name}' is not installed; run `make setup`")
    return path


def wait_for(
    what: str, probe: Callable[[], T], *, timeout: float = 90.0, interval: float = 0.25
) -> T:
    """Poll ``probe()`` until it returns something truthy and return that; fail naming ``what``.

    ``opsctl.poll.wait_until`` for tests: a timeout is a test failure (AssertionError).
    """
    try:
        return wait_until(what, probe, timeout=timeout, interval=interval)
    except WaitTimeout as exc:
        raise AssertionError(str(exc)) from None


def plain_redis_env(url: str) -> dict[str, str]:
    """IMGW_* pointing a process at a test's own Redis (plaintext, no ACL) instead of the
    stack's: the URL, and the stack's Redis login cleared (an empty variable is unset)."""
    return {
        "IMGW_REDIS_URL": url,
        "IMGW_REDIS_USERNAME": "",
        "IMGW_REDIS_PASSWORD_FILE": "",
        "IMGW_REDIS_CA_FILE": "",
    }
