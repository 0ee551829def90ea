"""Profiles: shipped ones load; bad ones fail with the file, field path and line (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from opsctl.errors import ExitCode, InvalidInputFile
from opsctl.loadtest.profiles import PROFILES_DIR, load_profile, pods_needed

pytestmark = pytest.mark.unit

SHIPPED = ("smoke", "peak", "soak", "spike", "capacity")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_load(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.behaviours.total_rate > 0
    # Only smoke overrides the stack's SLOs (a loaded laptop); the others hold no SLO numbers.
    assert (profile.slo is not None) == (name == "smoke")


def _write(tmp_path: Path, change) -> Path:
    document = yaml.safe_load((PROFILES_DIR / "smoke.yaml").read_text())
    change(document)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda d: d.update(colour="red"), "colour", "unknown field"),
        (
            lambda d: d["behaviours"]["direct"].update(rate_per_user_s=-1),
            "behaviours.direct.rate_per_user_s",
            "greater than or equal to 0",
        ),
        (
            lambda d: d["slo"].update(delivery_p50_ms=900, delivery_p95_ms=300),
            "slo",
            "cannot be met",
        ),
        (lambda d: d["slo"].update(connect_success_pct=101), "slo.connect_success_pct", "100"),
        (lambda d: d.update(users=3), "", "below behaviours.group.group_size"),
        (lambda d: d.update(slo={}), "slo", "overrides nothing"),
        (lambda d: d["slo"].update(max_lost=-1), "slo.max_lost", "greater than or equal to 0"),
        (lambda d: d["slo"].update(deliver_p99_ms=5), "slo.deliver_p99_ms", "unknown field"),
    ],
)
def test_bad_profiles_name_the_field(tmp_path: Path, change, field: str, words: str) -> None:
    path = _write(tmp_path, change)
    with pytest.raises(InvalidInputFile) as caught:
        load_profile(str(path))
    problems = caught.value.problems
    assert caught.value.exit_code is ExitCode.BAD_INPUT
    assert any(p.path == field and words in p.message for p in problems), problems
    assert all(p.file == str(path) for p in problems)


def test_unknown_field_has_a_line(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda d: d.update(colour="red"))
    with pytest.raises(InvalidInputFile) as caught:
        load_profile(str(path))
    line = next(p.line for p in caught.value.problems if p.path == "colour")
    assert path.read_text().splitlines()[line - 1].startswith("colour:")


def test_pods_needed_uses_headroom() -> None:
    assert pods_needed(20000, 1000, 20) == 25
    assert pods_needed(1, 1000, 20) == 1
