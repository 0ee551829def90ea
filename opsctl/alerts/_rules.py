"""Alert rule sources (alerts/rules/*.yaml): loading and the checks every rule must pass.

A source file is a plain Prometheus rule file. Every alert must carry the labels
``severity`` (page|ticket) and ``team``, and the annotations ``summary``, ``description`` and
``runbook_url``; the runbook must exist under docs/runbooks/.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from opsctl.errors import InputProblem
from opsctl.paths import REPO_ROOT
from opsctl.spec import read_yaml_model

RULES_DIR = REPO_ROOT / "alerts" / "rules"
RUNBOOKS_DIR = REPO_ROOT / "docs" / "runbooks"
RUNBOOK_BASE_URL = "https://runbooks.im.internal/"
SEVERITIES = ("page", "ticket")
REQUIRED_LABELS = ("severity", "team")
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook_url")
_WHAT = "alert rules"


@dataclass(frozen=True)
class Rule:
    """One alerting or recording rule, with where it came from."""

    file: str
    group: str
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body.get("alert") or self.body.get("record"))

    @property
    def is_alert(self) -> bool:
        return "alert" in self.body

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.body.get("labels") or {})

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.body.get("annotations") or {})

    @property
    def where(self) -> str:
        return f"group '{self.group}', {'alert' if self.is_alert else 'record'} '{self.name}'"


@dataclass
class RuleSet:
    """Rule groups by file name; generated groups and source groups end up here alike."""

    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def rules(self) -> Iterator[Rule]:
        for file, groups in self.files.items():
            for group in groups:
                for body in group.get("rules") or []:
                    yield Rule(file, str(group.get("name")), body)

    def alerts(self) -> list[Rule]:
        return [rule for rule in self.rules() if rule.is_alert]

    def recordings(self) -> list[Rule]:
        return [rule for rule in self.rules() if not rule.is_alert]

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for file, groups in self.files.items():
            path = directory / file
            path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000))
            written.append(path)
        return written


def runbook_path(rule: Rule) -> Path | None:
    url = rule.annotations.get("runbook_url", "")
    if not url.startswith(RUNBOOK_BASE_URL):
        return None
    return RUNBOOKS_DIR / f"{url.removeprefix(RUNBOOK_BASE_URL)}.md"


class RuleFile(BaseModel):
    """A Prometheus rule file: ``groups`` and nothing else (promtool refuses other keys)."""

    model_config = ConfigDict(extra="forbid")

    groups: list[dict[str, Any]]


def load_sources(directory: Path = RULES_DIR) -> RuleSet:
    """Read every source rule file and check its structure (exit 2, with line and column)."""
    ruleset = RuleSet()
    for path in sorted(directory.glob("*.yaml")):
        loaded = read_yaml_model(RuleFile, path, what=_WHAT, shown=_shown(path))
        ruleset.files[path.name] = loaded.groups
    return ruleset


def structural_problems(ruleset: RuleSet) -> list[InputProblem]:
    """Labels, annotations, severities and runbooks; PromQL syntax is promtool's job."""
    problems: list[InputProblem] = []
    seen: dict[str, str] = {}
    for rule in ruleset.rules():
        problems.extend(_rule_problems(rule))
        if rule.is_alert:
            if rule.name in seen:
                problems.append(
                    InputProblem(
                        rule.file, rule.where, f"duplicate alert (also in {seen[rule.name]})"
                    )
                )
            seen.setdefault(rule.name, rule.file)
    return problems


def _rule_problems(rule: Rule) -> Iterable[InputProblem]:
    if not isinstance(rule.body.get("expr"), str | int | float) or str(rule.body["expr"]) == "":
        yield InputProblem(rule.file, rule.where, "missing expr")
    if not rule.is_alert:
        return
    for label in REQUIRED_LABELS:
        if not rule.labels.get(label):
            yield InputProblem(rule.file, rule.where, f"missing required label '{label}'")
    severity = rule.labels.get("severity")
    if severity and severity not in SEVERITIES:
        yield InputProblem(
            rule.file, rule.where, f"severity '{severity}' is not one of {SEVERITIES}"
        )
    for annotation in REQUIRED_ANNOTATIONS:
        if not rule.annotations.get(annotation):
            yield InputProblem(rule.file, rule.where, f"missing required annotation '{annotation}'")
    url = rule.annotations.get("runbook_url")
    if url:
        path = runbook_path(rule)
        if path is None:
            yield InputProblem(
                rule.file, rule.where, f"runbook_url must start with {RUNBOOK_BASE_URL}"
            )
        elif not path.is_file():
            yield InputProblem(rule.file, rule.where, f"runbook {_shown(path)} does not exist")


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
