"""Bad input to `opsctl loadtest` exits 2 with the file and field, before any load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from opsctl.loadtest.profiles import PROFILES_DIR

pytestmark = pytest.mark.unit


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


def _profile(tmp_path: Path, **changes: object) -> Path:
    document = yaml.safe_load((PROFILES_DIR / "smoke.yaml").read_text())
    document.update(changes)
    path = tmp_path / "storm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("storms", "field", "words"),
    [
        ([{"at_s": 30, "share_pct": 50}], "storms[0].at_s", "not inside the sending window"),
        ([{"at_s": 5, "share_pct": 150}], "storms[0].share_pct", "less than or equal to 100"),
        ([{"at_s": 5, "share": 50}], "storms[0].share", "unknown field"),
        (
            [{"at_s": 6, "share_pct": 10}, {"at_s": 4, "share_pct": 10}],
            "storms[1].at_s",
            "increasing",
        ),
    ],
)
def test_bad_storms_exit_2_naming_the_field(
    opsctl, tmp_path: Path, storms: list, field: str, words: str
) -> None:
    path = _profile(tmp_path, storms=storms)
    result = opsctl("loadtest", "run", "--profile", str(path), "--target", "ws://127.0.0.1:1/ws")
    assert result.exit_code == 2, result.stderr
    assert str(path) in result.stderr
    assert field in result.stderr
    assert words in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--worker-cpu", "lots"], "--worker-cpu 'lots' is not a CPU quantity"),
        (["--worker-memory", "2TB"], "--worker-memory '2TB' is not a memory quantity"),
        (["--jwt-secret-file", "/dev/null"], "--jwt-secret-file does not apply with --on-cluster"),
        (["--region", "mars"], "region 'mars' is not in stack 'local'"),
    ],
)
def test_bad_cluster_flags_exit_2_before_anything(opsctl, args: list[str], words: str) -> None:
    result = opsctl("loadtest", "run", "--on-cluster", *args)
    assert result.exit_code == 2, result.stderr
    assert words in result.stderr


def test_cluster_flags_without_on_cluster_exit_2(opsctl) -> None:
    result = opsctl("loadtest", "run", "--keep", "--target", "ws://127.0.0.1:1/ws")
    assert result.exit_code == 2
    assert "--keep only apply with --on-cluster" in result.stderr


def test_too_many_local_workers_exit_2(opsctl) -> None:
    result = opsctl("loadtest", "run", "--workers", "65", "--target", "ws://127.0.0.1:1/ws")
    assert result.exit_code == 2
    assert "at most 64" in result.stderr


def test_manifests_render_the_run_and_the_operator_role(opsctl) -> None:
    result = opsctl("loadtest", "manifests", "--profile", "peak")
    assert result.exit_code == 0, result.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout)]
    assert kinds.count("Job") == 2
    assert "Role" in kinds
    assert "ServiceAccount" in kinds
    role = opsctl("loadtest", "manifests", "--operator-role")
    assert yaml.safe_load(role.stdout)["kind"] == "Role"
