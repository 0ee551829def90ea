"""Rules in git against the rules a live Prometheus has loaded (``/api/v1/rules``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from opsctl.alerts._rules import RuleSet
from opsctl.prometheus import Prometheus, PrometheusRejected

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class RuleDiff:
    group: str
    rule: str
    change: str  # missing-live | extra-live | changed
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "group": self.group,
            "rule": self.rule,
            "change": self.change,
            "detail": self.detail,
        }


class _Formatter:
    """Both sides are printed by the live Prometheus's own formatter, so layout never differs.

    An expression it refuses to format (``PrometheusRejected``) is compared as written, with
    its whitespace collapsed; an unreachable Prometheus stops the diff.
    """

    def __init__(self, prometheus: Prometheus) -> None:
        self._prometheus = prometheus
        self._cache: dict[str, str] = {}

    def __call__(self, expr: object) -> str:
        text = _SPACE.sub(" ", str(expr)).strip()
        if text not in self._cache:
            try:
                formatted = self._prometheus.format_query(text)
            except PrometheusRejected:
                formatted = text
            self._cache[text] = _SPACE.sub(" ", formatted).strip()
        return self._cache[text]


def _seconds(duration: object) -> float:
    if isinstance(duration, int | float):
        return float(duration)
    text = str(duration or "0s")
    total = 0.0
    for amount, unit in re.findall(r"(\d+)(ms|s|m|h|d)", text):
        total += int(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return total


def _key(rule: dict[str, Any]) -> str:
    name = rule.get("alert") or rule.get("record") or rule.get("name")
    labels = ",".join(f"{k}={v}" for k, v in sorted((rule.get("labels") or {}).items()))
    return f"{name}{{{labels}}}"


def live_rules(prometheus: Prometheus) -> dict[str, dict[str, dict[str, Any]]]:
    """Loaded rules by group name, then by ``_key``; raises ``PrometheusUnreachable``."""
    return {
        group["name"]: {_key(rule): rule for rule in group["rules"]} for group in prometheus.rules()
    }


def diff(wanted: RuleSet, prometheus_url: str) -> list[RuleDiff]:
    """Raises ``PrometheusUnreachable`` (a CheckFailed naming the URL) when Prometheus fails."""
    with Prometheus(prometheus_url) as prometheus:
        return _compare(wanted, live_rules(prometheus), _Formatter(prometheus))


def _compare(
    wanted: RuleSet, live: dict[str, dict[str, dict[str, Any]]], normal: _Formatter
) -> list[RuleDiff]:
    diffs: list[RuleDiff] = []
    for groups in wanted.files.values():
        for group in groups:
            name = str(group["name"])
            loaded = live.get(name, {})
            for rule in group.get("rules") or []:
                key = _key(rule)
                found = loaded.pop(key, None)
                if found is None:
                    diffs.append(RuleDiff(name, key, "missing-live"))
                    continue
                if normal(found.get("query")) != normal(rule.get("expr")):
                    diffs.append(
                        RuleDiff(name, key, "changed", f"expr: live `{normal(found.get('query'))}`")
                    )
                elif _seconds(found.get("duration")) != _seconds(rule.get("for")):
                    diffs.append(
                        RuleDiff(name, key, "changed", f"for: live {found.get('duration')}s")
                    )
                elif (found.get("annotations") or {}) != (rule.get("annotations") or {}):
                    diffs.append(RuleDiff(name, key, "changed", "annotations differ"))
            diffs.extend(RuleDiff(name, key, "extra-live") for key in loaded)
            live.pop(name, None)
    # Whole groups the live Prometheus has and git does not.
    for name, rules in live.items():
        diffs.extend(RuleDiff(name, key, "extra-live") for key in rules)
    return diffs
