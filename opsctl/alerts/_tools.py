"""promtool and amtool, from the Debian packages; a missing one is an error, never a skip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from opsctl.errors import CheckFailed, ToolMissing

TIMEOUT_S = 300

_PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(
            f"{name} is not installed",
            hint=f"run `make setup` (Debian package {_PACKAGES.get(name, name)})",
        )
    return path


def run(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [tool(name), *args]
    try:
        return subprocess.run(
            command, capture_output=True, text=True, cwd=cwd, check=False, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"{name} {' '.join(args)} did not finish within {TIMEOUT_S} s") from exc
