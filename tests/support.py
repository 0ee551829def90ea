"""Shared test helpers (not fixtures): running opsctl, requiring real tools, waiting."""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsctl.paths import DEFAULT_INFRA_DIR

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
    what: str, probe: Callable[[], Any], *, timeout: float = 90.0, interval: float = 0.25
) -> Any:
    """Poll ``probe()`` until it returns something truthy and return that; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
