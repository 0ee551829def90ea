"""Metric names referenced by PromQL expressions and alert rules (a PromQL-ish scanner).

Not a full parser: it removes everything that can hold identifiers that are *not* metric names
(strings, label matchers, label lists after by/without/on/ignoring/group_*, ranges, offsets,
numbers, function calls and keywords), and what is left are the metric names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from opsctl.alerts._rules import RuleSet

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_COMMENT = re.compile(r"#[^\n]*")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"')
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z.]+", re.IGNORECASE)
_AT = re.compile(r"@\s*(?:start\(\)|end\(\)|[0-9.]+)")
_NUMBER = re.compile(
    r"(?<![a-zA-Z0-9_:.])(?:0x[0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)"
    r"(?![a-zA-Z0-9_:])"
)
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_WORD_OPERATORS = ("and", "or", "unless", "atan2")
_MODIFIERS = ("bool", "by", "without", "on", "ignoring", "group_left", "group_right", "offset")
_KEYWORDS = frozenset((*_WORD_OPERATORS, *_MODIFIERS, "inf", "nan"))


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects (``foo``, ``foo{a="b"}``, ``{__name__="foo"}``)."""
    names: set[str] = set()
    text = _COMMENT.sub(" ", expr)
    # Strings first (they may hold braces), except the __name__ matchers inside label sets.
    for matchers in _MATCHERS.findall(text):
        names.update(_NAME_MATCHER.findall(matchers))
    text = _STRING.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    while _BRACKETS.search(text):  # subqueries may nest
        text = _BRACKETS.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _AT.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if word.lower() in _KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        names.add(word)
    return names


@dataclass(frozen=True)
class RuleMetrics:
    file: str
    rule: str  # "alert X" or "record Y"
    metrics: frozenset[str]


def rule_metrics(ruleset: RuleSet) -> list[RuleMetrics]:
    """The metric names each alert and recording rule uses."""
    found = []
    for rule in ruleset.rules():
        kind = "alert" if rule.is_alert else "record"
        names = metric_names(str(rule.body.get("expr", "")))
        found.append(RuleMetrics(rule.file, f"{kind} {rule.name}", frozenset(names)))
    return found


def recorded_names(ruleset: RuleSet) -> set[str]:
    """Series the rules produce themselves (recording rules, and ALERTS)."""
    return {rule.name for rule in ruleset.recordings()} | {"ALERTS", "ALERTS_FOR_STATE"}


def exposed_metrics(prometheus_url: str) -> set[str]:
    """Every metric name the live Prometheus has series for.

    Raises ``PrometheusUnreachable`` (a CheckFailed naming the URL) when Prometheus fails.
    """
    from opsctl.prometheus import Prometheus

    with Prometheus(prometheus_url) as prometheus:
        return prometheus.metric_names()


def unknown_metrics(
    ruleset: RuleSet, exposed: Iterable[str], *, only_files: Iterable[str] | None = None
) -> list[str]:
    """'<file>: <rule>: metric <name> is not exposed' for every rule using an unknown metric."""
    known = set(exposed) | recorded_names(ruleset)
    files = set(only_files) if only_files is not None else None
    problems = []
    for entry in rule_metrics(ruleset):
        if files is not None and entry.file not in files:
            continue
        for name in sorted(entry.metrics - known):
            problems.append(f"{entry.file}: {entry.rule}: metric {name} is not exposed")
    return problems
