"""The alerts of a drill: how long the running Prometheus waits before each fires (its rules'
``for:``), and what the stack's Alertmanager received while the drill ran."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import httpx

from opsctl.drill._model import AlertSeen, ExpectedAlert
from opsctl.errors import CheckFailed

HTTP_TIMEOUT_S = 5.0
# After its `for:`, an alert still waits for a scrape, a rule evaluation and Alertmanager's
# group_wait (the local stack: 2 s, 2 s, 1 s): it usually arrives within TYPICAL; the hold
# gives up after SLACK (a busy machine).
FIRING_TYPICAL_S = 8.0
FIRING_SLACK_S = 30.0


def _get(url: str, what: str) -> Any:
    try:
        response = httpx.get(url, timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise CheckFailed(f"cannot read {what} at {url}: {exc}") from exc
    return response.json()


def rule_durations(prometheus_url: str) -> dict[str, float]:
    """Alert name -> its ``for:`` in seconds, as the running Prometheus evaluates it."""
    data = _get(f"{prometheus_url}/api/v1/rules?type=alert", "Prometheus' rules")
    durations: dict[str, float] = {}
    for group in data.get("data", {}).get("groups", []):
        for rule in group.get("rules", []):
            if rule.get("type", "alerting") == "alerting":
                name = str(rule["name"])
                durations[name] = max(durations.get(name, 0.0), float(rule.get("duration", 0)))
    return durations


def hold_needed(
    expected: Iterable[ExpectedAlert], durations: dict[str, float], *, typical: bool = False
) -> float:
    """How long the fault must last at most (``typical``: usually) for every expected alert to
    reach Alertmanager."""
    slack = FIRING_TYPICAL_S if typical else FIRING_SLACK_S
    needed = [durations.get(alert.name, 0.0) + slack for alert in expected]
    return max(needed, default=0.0)


def unknown_alerts(expected: Iterable[ExpectedAlert], durations: dict[str, float]) -> list[str]:
    """Expected alerts that the running Prometheus has no rule for (they could never fire)."""
    return [alert.name for alert in expected if alert.name not in durations]


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class AlertWatch:
    """Polls Alertmanager: which alerts were already active before the fault, which came after."""

    def __init__(self, alertmanager_url: str) -> None:
        self.url = alertmanager_url
        self.before: set[tuple[str, float]] = set()  # (fingerprint, startsAt)
        self.seen: dict[tuple[str, float], AlertSeen] = {}

    def _alerts(self) -> list[dict[str, Any]]:
        return list(_get(f"{self.url}/api/v2/alerts", "Alertmanager's alerts") or [])

    def baseline(self) -> None:
        """What is active now, before the fault: not evidence that the fault fired anything."""
        for alert in self._alerts():
            self.before.add((str(alert.get("fingerprint")), _epoch(alert["startsAt"])))
        self.poll()

    def poll(self) -> None:
        for alert in self._alerts():
            key = (str(alert.get("fingerprint")), _epoch(alert["startsAt"]))
            if key in self.seen:
                continue
            labels = {str(k): str(v) for k, v in alert.get("labels", {}).items()}
            self.seen[key] = AlertSeen(
                name=labels.get("alertname", "?"),
                labels={k: v for k, v in labels.items() if k != "alertname"},
                starts_at=key[1],
                before_fault=key in self.before,
            )

    def fired(self) -> tuple[AlertSeen, ...]:
        return tuple(sorted(self.seen.values(), key=lambda a: (a.starts_at, a.name)))

    def decided(self, expected: Iterable[ExpectedAlert], state: dict[str, Any]) -> bool:
        """Whether waiting longer can change an expected alert's check: not once each has fired
        after the fault, or was active already before it (it cannot fire again while active)."""
        seen = list(self.seen.values())
        return all(
            any(want.matches({"alertname": a.name, **a.labels}, state) for a in seen)
            for want in expected
        )
