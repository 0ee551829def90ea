"""Dashboard checks: structure, and every PromQL expression run against a real Prometheus."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opsctl.prometheus import Prometheus, PrometheusRejected

REQUIRED_VARIABLES = ("datasource", "region", "instance")
# Values substituted for template variables when an expression is run for real.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$region": ".*",
    "$instance": ".*",
}
_RANGE_WITHOUT_RATE_INTERVAL = re.compile(r"\[(?!\$__rate_interval\])[^\]]+\]")


@dataclass(frozen=True)
class Expression:
    dashboard: str
    panel: str
    expr: str


def expressions(uid: str, document: dict[str, Any]) -> Iterator[Expression]:
    for panel in document.get("panels") or []:
        for target in panel.get("targets") or []:
            if target.get("expr"):
                yield Expression(uid, str(panel.get("title", "?")), str(target["expr"]))
    for variable in (document.get("templating") or {}).get("list") or []:
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, str):
            yield Expression(uid, f"variable ${variable['name']}", query)


def structure_problems(dashboards: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for uid, document in dashboards.items():
        if document.get("uid") != uid:
            problems.append(f"{uid}: uid is {document.get('uid')!r}")
        names = {v.get("name") for v in (document.get("templating") or {}).get("list") or []}
        for variable in REQUIRED_VARIABLES:
            if variable not in names:
                problems.append(f"{uid}: missing the ${variable} variable")
        titles = [p.get("title") for p in document.get("panels") or [] if p.get("type") != "row"]
        if len(titles) != len(set(titles)):
            problems.append(f"{uid}: duplicate panel titles")
        for panel in document.get("panels") or []:
            if panel.get("type") == "row":
                continue
            source = (panel.get("datasource") or {}).get("uid")
            if source != "${datasource}":
                problems.append(f"{uid}/{panel.get('title')}: datasource is not $datasource")
            if not panel.get("targets"):
                problems.append(f"{uid}/{panel.get('title')}: no queries")
        for expression in expressions(uid, document):
            if expression.panel.startswith("variable "):
                continue
            if _RANGE_WITHOUT_RATE_INTERVAL.search(expression.expr):
                problems.append(
                    f"{uid}/{expression.panel}: use [$__rate_interval] in ranges: {expression.expr}"
                )
    return problems


def _runnable(expression: Expression) -> str:
    text = expression.expr
    if text.startswith("label_values(") and text.endswith(")"):
        inner = text[len("label_values(") : -1]
        selector, _, _label = inner.rpartition(",")
        text = selector.strip() or "up"
    for variable, value in SUBSTITUTIONS.items():
        text = text.replace(variable, value)
    return text


def live_problems(
    dashboards: dict[str, dict[str, Any]], prometheus_url: str, *, timeout_s: float = 10
) -> list[str]:
    """Every expression must parse and return at least one series from the live Prometheus.

    An expression Prometheus refuses is a problem; an unreachable Prometheus raises
    ``PrometheusUnreachable`` (a CheckFailed naming the URL).
    """
    problems = []
    with Prometheus(prometheus_url, timeout=timeout_s) as prometheus:
        for uid, document in dashboards.items():
            for expression in expressions(uid, document):
                query = _runnable(expression)
                where = f"{uid}/{expression.panel}"
                try:
                    result = prometheus.query(query)
                except PrometheusRejected as refused:
                    problems.append(f"{where}: does not run: {refused.reason}: {query}")
                    continue
                if not result:
                    problems.append(f"{where}: returns no series: {query}")
    return problems
