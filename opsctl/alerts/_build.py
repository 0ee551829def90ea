"""Build, lint, test and the coverage gate: what `opsctl alerts` does without a live stack."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from opsctl.alerts import _tools
from opsctl.alerts._metrics import exposed_metrics, unknown_metrics
from opsctl.alerts._routing import FALLBACK_RECEIVER, alertmanager_config, expected_receiver
from opsctl.alerts._rules import RULES_DIR, RuleSet, load_sources, structural_problems
from opsctl.alerts._slo import slo_rules
from opsctl.errors import CheckFailed, InputProblem, InvalidInputFile
from opsctl.paths import REPO_ROOT
from opsctl.spec import StackSpec

TESTS_DIR = REPO_ROOT / "alerts" / "tests"
ALERTMANAGER_FILE = "alertmanager.yml"


@dataclass(frozen=True)
class Built:
    directory: Path
    rule_files: list[Path]
    alertmanager: Path


def ruleset(spec: StackSpec, sources: Path = RULES_DIR) -> RuleSet:
    """Source rules plus the rules generated from the spec; structure checked (exit 2)."""
    rules = load_sources(sources)
    generated = slo_rules(spec)
    clash = set(rules.files) & set(generated.files)
    if clash:
        problem = InputProblem(str(sources), "", f"{sorted(clash)} is reserved for generated rules")
        raise InvalidInputFile("alert rules", str(sources), [problem])
    rules.files.update(generated.files)
    problems = structural_problems(rules)
    if problems:
        raise InvalidInputFile("alert rules", str(sources), problems)
    return rules


def build(spec: StackSpec, out: Path, sources: Path = RULES_DIR) -> Built:
    rules = ruleset(spec, sources)
    out.mkdir(parents=True, exist_ok=True)
    rule_files = rules.write(out)
    alertmanager = out / ALERTMANAGER_FILE
    alertmanager.write_text(yaml.safe_dump(alertmanager_config(spec), sort_keys=False))
    return Built(out, rule_files, alertmanager)


@contextmanager
def built(spec: StackSpec, sources: Path = RULES_DIR) -> Iterator[Built]:
    with tempfile.TemporaryDirectory(prefix="opsctl-alerts-") as scratch:
        yield build(spec, Path(scratch), sources)


_PROMTOOL_RULE_ERROR = re.compile(
    r"group \"(?P<group>[^\"]+)\", rule (?P<index>\d+), \"(?P<rule>[^\"]+)\""
)


def lint(
    spec: StackSpec, sources: Path = RULES_DIR, *, prometheus_url: str | None = None
) -> list[str]:
    """promtool's syntax and lint checks on every file; problems are bad input (exit 2).

    With ``prometheus_url``, every metric a rule uses must also exist in that live Prometheus.
    """
    checked = []
    problems: list[InputProblem] = []
    if prometheus_url is not None:
        rules = ruleset(spec, sources)
        for text in unknown_metrics(rules, exposed_metrics(prometheus_url)):
            file, rule, message = text.split(": ", 2)
            problems.append(InputProblem(file, rule, f"{message} at {prometheus_url}"))
    with built(spec, sources) as result:
        for path in result.rule_files:
            answer = _tools.run(
                "promtool", "check", "rules", "--lint=all", "--lint-fatal", str(path)
            )
            shown = _source_name(path, sources)
            if answer.returncode != 0:
                problems.extend(_promtool_problems(shown, answer.stdout + answer.stderr))
            checked.append(shown)
        answer = _tools.run("amtool", "check-config", str(result.alertmanager))
        if answer.returncode != 0:
            problems.append(InputProblem(ALERTMANAGER_FILE, "", answer.stdout + answer.stderr))
    if problems:
        raise InvalidInputFile("alert rules", str(sources), problems)
    return checked


def _promtool_problems(file: str, output: str) -> list[InputProblem]:
    problems = []
    for line in output.splitlines():
        text = line.strip()
        if not text or text.startswith(("Checking", "FAILED", "SUCCESS")):
            continue
        found = _PROMTOOL_RULE_ERROR.search(text)
        where = f"group '{found['group']}', rule '{found['rule']}'" if found else ""
        problems.append(InputProblem(file, where, text))
    return problems or [InputProblem(file, "", output.strip())]


def _source_name(path: Path, sources: Path) -> str:
    source = sources / path.name
    if source.is_file():
        try:
            return str(source.resolve().relative_to(REPO_ROOT))
        except ValueError:
            return str(source)
    return f"{path.name} (generated from the stack spec)"


def run_tests(spec: StackSpec, sources: Path = RULES_DIR, tests_dir: Path = TESTS_DIR) -> list[str]:
    """Run every promtool unit test against the built rules; a failure is exit 1."""
    test_files = sorted(tests_dir.glob("*.yaml"))
    failures = []
    with built(spec, sources) as result:
        for test_file in test_files:
            copied = result.directory / test_file.name
            shutil.copyfile(test_file, copied)
            answer = _tools.run("promtool", "test", "rules", copied.name, cwd=result.directory)
            if answer.returncode != 0:
                failures.append(f"{test_file.name}:\n{answer.stdout}{answer.stderr}".rstrip())
    if failures:
        raise CheckFailed("promtool rule tests failed:\n" + "\n".join(failures))
    return [path.name for path in test_files]


def names_under_test(tests_dir: Path = TESTS_DIR) -> tuple[set[str], str]:
    """Alert names with an alert_rule_test, and all promql_expr_test text."""
    alerts: set[str] = set()
    exprs: list[str] = []
    for path in sorted(tests_dir.glob("*.yaml")):
        document: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
        for case in document.get("tests") or []:
            for alert_test in case.get("alert_rule_test") or []:
                alerts.add(str(alert_test.get("alertname")))
            for expr_test in case.get("promql_expr_test") or []:
                exprs.append(str(expr_test.get("expr")))
    return alerts, "\n".join(exprs)


def coverage(spec: StackSpec, sources: Path = RULES_DIR, tests_dir: Path = TESTS_DIR) -> list[str]:
    """Gaps that fail the build: untested rules and severity/team pairs that route nowhere."""
    rules = ruleset(spec, sources)  # runbooks and required labels are checked here (exit 2)
    alerts_tested, exprs = names_under_test(tests_dir)
    untested = [rule for rule in rules.alerts() if rule.name not in alerts_tested]
    gaps = [f"alert {rule.name} ({rule.file}) has no promtool test" for rule in untested]
    for record in sorted({rule.name for rule in rules.recordings()}):
        if not re.search(rf"(?<![\w:]){re.escape(record)}(?![\w:])", exprs):
            gaps.append(f"recording rule {record} has no promql_expr_test")
    combos = sorted({(r.labels["severity"], r.labels["team"]) for r in rules.alerts()})
    with built(spec, sources) as result:
        for severity, team in combos:
            labels = (f"severity={severity}", f"team={team}")
            config = f"--config.file={result.alertmanager}"
            answer = _tools.run("amtool", "config", "routes", "test", config, *labels)
            receiver = answer.stdout.strip()
            wanted = expected_receiver(spec, team, severity)
            if wanted is None:
                gaps.append(
                    f"team '{team}' (severity {severity}) is not in the spec's alert routing"
                )
            elif receiver != wanted:
                shown = receiver or answer.stderr.strip()
                gaps.append(
                    f"severity={severity} team={team} routes to '{shown}', expected '{wanted}'"
                    + (" (the fallback)" if receiver == FALLBACK_RECEIVER else "")
                )
    return gaps
