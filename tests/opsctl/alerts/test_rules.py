"""Structural checks on rule sources: labels, annotations, severities, runbooks, duplicates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from opsctl.alerts._rules import RULES_DIR, load_sources, structural_problems
from opsctl.errors import InvalidInputFile

pytestmark = pytest.mark.unit

ANNOTATIONS = {
    "summary": "s",
    "description": "d",
    "runbook_url": "https://runbooks.im.internal/gateway-down",
}
GOOD = {
    "alert": "ImThingBroken",
    "expr": "up == 0",
    "labels": {"severity": "page", "team": "im-platform"},
    "annotations": ANNOTATIONS,
}


def problems_for(tmp_path: Path, *rules: dict[str, Any]) -> list[str]:
    (tmp_path / "x.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": list(rules)}]})
    )
    return [f"{p.file}: {p.path}: {p.message}" for p in structural_problems(load_sources(tmp_path))]


def test_shipped_sources_have_no_structural_problems() -> None:
    assert structural_problems(load_sources(RULES_DIR)) == []


def test_a_good_rule_passes(tmp_path: Path) -> None:
    assert problems_for(tmp_path, GOOD) == []


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"labels": {"team": "im-platform"}}, "missing required label 'severity'"),
        ({"labels": {"severity": "page"}}, "missing required label 'team'"),
        ({"labels": {"severity": "urgent", "team": "t"}}, "severity 'urgent' is not one of"),
        (
            {"annotations": {"summary": "s", "description": "d"}},
            "missing required annotation 'runbook_url'",
        ),
        ({"annotations": {**ANNOTATIONS, "runbook_url": "https://wiki/x"}}, "must start with"),
        (
            {"annotations": {**ANNOTATIONS, "runbook_url": "https://runbooks.im.internal/nope"}},
            "runbook docs/runbooks/nope.md does not exist",
        ),
        ({"expr": ""}, "missing expr"),
    ],
)
def test_each_problem_names_file_rule_and_problem(
    tmp_path: Path, change: dict[str, Any], words: str
) -> None:
    (problem,) = problems_for(tmp_path, {**GOOD, **change})
    assert problem.startswith("x.yaml: group 'g', alert 'ImThingBroken': ")
    assert words in problem


def test_duplicate_alert_names_are_refused(tmp_path: Path) -> None:
    (problem,) = problems_for(tmp_path, GOOD, GOOD)
    assert "duplicate alert" in problem


@pytest.mark.parametrize(
    ("text", "located"),
    [
        ("groups:\n  - name: g\n    rules: [\n", "x.yaml:4:1: YAML syntax error"),
        ("groups: []\ngroup: []\n", "x.yaml:2:1: group: unknown field; did you mean 'groups'?"),
        ("groups:\n  - name: a\ngroups: []\n", "x.yaml:3:1: groups: duplicate key"),
        ("groups: {}\n", "x.yaml:1:1: groups: expected a list"),
    ],
)
def test_a_malformed_rule_file_is_refused_at_its_line_and_column(
    tmp_path: Path, text: str, located: str
) -> None:
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(InvalidInputFile) as raised:
        load_sources(tmp_path)
    (problem,) = raised.value.problems
    assert str(problem).startswith(str(tmp_path / located)), problem
