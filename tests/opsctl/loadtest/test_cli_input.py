"""Bad input to `opsctl loadtest` exits 2 with the file and field, before any load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from opsctl.loadtest.profiles import PROFILES_DIR
from tests.loadtests.conftest import with_loadtest_cli  # noqa: F401 (fixture)

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("with_loadtest_cli")]


def test_invalid_profile_exits_2_with_the_field_path(opsctl, tmp_path: Path) -> None:
    document = yaml.safe_load((PROFILES_DIR / "smoke.yaml").read_text())
    document["behaviours"]["group"]["rate_per_user_s"] = -0.5
    document["speed"] = "fast"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    result = opsctl("loadtest", "run", "--profile", str(path), "--target", "ws://127.0.0.1:1/ws")
    assert result.exit_code == 2
    assert str(path) in result.stderr
    assert "behaviours.group.rate_per_user_s" in result.stderr
    assert "speed" in result.stderr
    assert "unknown field" in result.stderr


def test_an_slo_override_the_stack_makes_unmeetable_exits_2(opsctl, tmp_path: Path) -> None:
    document = yaml.safe_load((PROFILES_DIR / "peak.yaml").read_text())
    document["slo"] = {"delivery_p95_ms": 300}  # above the local stack's p99 SLO (250 ms)
    path = tmp_path / "peak-p95.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    result = opsctl(
        "loadtest",
        "run",
        "--profile",
        str(path),
        "--target",
        "ws://127.0.0.1:1/ws",  # never reached: the profile fails first
        "--jwt-secret-file",
        "/dev/null",
    )
    assert result.exit_code == 2
    assert str(path) in result.stderr
    assert "slo.delivery_p95_ms" in result.stderr
    assert "cannot be met" in result.stderr
    assert "unreachable" not in result.stderr


def test_unknown_profile_lists_the_shipped_ones(opsctl) -> None:
    result = opsctl("loadtest", "run", "--profile", "nope")
    assert result.exit_code == 2
    assert "smoke" in result.stderr
    assert "capacity" in result.stderr


def test_bad_target_url_exits_2(opsctl) -> None:
    result = opsctl("loadtest", "run", "--target", "http://x/ws", "--jwt-secret-file", "/dev/null")
    assert result.exit_code == 2
    assert "not a WebSocket URL" in result.stderr


def test_preflight_prints_a_table(opsctl) -> None:
    result = opsctl("loadtest", "preflight", "--profile", "smoke", "--output", "json")
    assert result.exit_code in (0, 1)
    assert '"connections": 20' in result.stdout
