"""The installed `opsctl` console script, run as an SRE or CI would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opsctl.paths import REPO_ROOT

pytestmark = pytest.mark.e2e

OPSCTL = str(Path(sys.executable).with_name("opsctl"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "OPSCTL_CONFIG": "/nonexistent.toml", **(env or {})}
    environment.pop("OPSCTL_STACK", None)
    return subprocess.run(
        [OPSCTL, *args], capture_output=True, text=True, env=environment, cwd=REPO_ROOT, check=False
    )


def test_validate_and_show_prod() -> None:
    assert run("spec", "validate", "--stack", "prod").returncode == 0
    shown = run("spec", "show", "--stack", "prod", "--output", "json")
    assert shown.returncode == 0
    assert len(json.loads(shown.stdout)["regions"]) == 3


def test_bad_spec_exits_2_with_field_path(tmp_path: Path) -> None:
    text = (REPO_ROOT / "infra" / "Pulumi.local.yaml").read_text()
    (tmp_path / "Pulumi.bad.yaml").write_text(
        text.replace("replicationFactor: 1", "replicationFactor: 5", 1)
    )
    result = run("spec", "validate", "--stack", "bad", env={"OPSCTL_INFRA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert (
        "regions[0].kafka.replicationFactor: 5 is greater than the region's brokers (1)"
        in result.stderr
    )
    assert "Pulumi.bad.yaml:" in result.stderr
    assert "Traceback" not in result.stderr
