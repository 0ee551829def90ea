"""Live alert state: firing/pending alerts from Prometheus, silences through Alertmanager API v2."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from opsctl.errors import CheckFailed, UserInputError
from opsctl.prometheus import Prometheus

MAX_SILENCE = timedelta(days=7)  # longer than a week is a rule change, not a silence
_MATCHER = re.compile(r"^(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)(?P<op>=~|!~|!=|=)(?P<value>.*)$")
_DURATION = re.compile(r"^(?P<n>[0-9]+)(?P<unit>[smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Alert:
    name: str
    state: str  # firing | pending
    labels: dict[str, str]
    active_since: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "alertname": self.name,
            "state": self.state,
            "labels": self.labels,
            "activeSince": self.active_since,
        }


def list_alerts(prometheus_url: str) -> list[Alert]:
    """Firing and pending alerts, from the ALERTS series.

    Raises ``PrometheusUnreachable`` (a CheckFailed naming the URL) when Prometheus fails.
    """
    with Prometheus(prometheus_url) as prometheus:
        alerts = prometheus.query('ALERTS{alertstate=~"firing|pending"}')
        since = prometheus.query("ALERTS_FOR_STATE")
    started = {_key(item["metric"]): float(item["value"][1]) for item in since}
    found = []
    for item in alerts:
        labels = {k: v for k, v in item["metric"].items() if k not in {"__name__", "alertstate"}}
        at = started.get(_key(labels))
        found.append(
            Alert(
                name=labels.get("alertname", "?"),
                state=item["metric"].get("alertstate", "?"),
                labels=labels,
                active_since=datetime.fromtimestamp(at, UTC).isoformat() if at else None,
            )
        )
    return sorted(found, key=lambda a: (a.state != "firing", a.name, sorted(a.labels.items())))


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in {"__name__", "alertstate"}))


def parse_matcher(text: str) -> dict[str, Any]:
    match = _MATCHER.match(text.strip())
    if match is None or match["value"] == "":
        raise UserInputError(
            f"--matcher: '{text}' is not name=value (also !=, =~, !~ for regular expressions)"
        )
    op = match["op"]
    return {
        "name": match["name"],
        "value": match["value"],
        "isRegex": "~" in op,
        "isEqual": not op.startswith("!"),
    }


def format_matcher(matcher: dict[str, Any]) -> str:
    op = (
        ("=~" if matcher["isRegex"] else "=")
        if matcher.get("isEqual", True)
        else ("!~" if matcher["isRegex"] else "!=")
    )
    return f"{matcher['name']}{op}{matcher['value']}"


def parse_duration(text: str, *, option: str = "--expires") -> timedelta:
    match = _DURATION.match(text.strip())
    if match is None:
        raise UserInputError(f"{option}: '{text}' is not a duration like 30m, 2h or 1d")
    duration = timedelta(**{_UNITS[match["unit"]]: int(match["n"])})
    if duration <= timedelta(0):
        raise UserInputError(f"{option}: {text} must be longer than zero")
    if duration > MAX_SILENCE:
        raise UserInputError(f"{option}: {text} is longer than 7 days; change the rule instead")
    return duration


@dataclass(frozen=True)
class SilenceRequest:
    matchers: list[dict[str, Any]]
    author: str
    comment: str
    duration: timedelta

    @classmethod
    def build(
        cls,
        *,
        matchers: list[str],
        author: str,
        comment: str,
        expires: str,
        namespace: str | None = None,
        region: str | None = None,
    ) -> SilenceRequest:
        """Validate everything before anything is sent (exit 2 on bad input)."""
        if not author.strip():
            raise UserInputError("--author is required: who is silencing")
        if not comment.strip():
            raise UserInputError("--comment is required: why (a ticket or change id)")
        parsed = [parse_matcher(m) for m in matchers]
        if namespace:
            parsed.append(parse_matcher(f"namespace={namespace}"))
        if region:
            parsed.append(parse_matcher(f"region={region}"))
        if not parsed:
            raise UserInputError(
                "a silence needs at least one --matcher, --namespace or --region; "
                "silencing everything is not allowed"
            )
        return cls(parsed, author.strip(), comment.strip(), parse_duration(expires))


def _request(method: str, url: str, **kwargs: Any) -> Any:
    try:
        response = httpx.request(method, url, timeout=10, **kwargs)
    except httpx.HTTPError as exc:
        raise CheckFailed(f"cannot reach Alertmanager at {url}: {exc}") from exc
    if response.status_code >= 400:
        raise CheckFailed(
            f"Alertmanager refused {method} {url}: {response.status_code} {response.text}"
        )
    return response.json() if response.content else None


def create_silence(alertmanager_url: str, request: SilenceRequest) -> str:
    now = datetime.now(UTC)
    body = {
        "matchers": request.matchers,
        "startsAt": now.isoformat(),
        "endsAt": (now + request.duration).isoformat(),
        "createdBy": request.author,
        "comment": request.comment,
    }
    answer = _request("POST", f"{alertmanager_url}/api/v2/silences", json=body)
    return str(answer["silenceID"])


def list_silences(alertmanager_url: str, *, include_expired: bool = False) -> list[dict[str, Any]]:
    silences = _request("GET", f"{alertmanager_url}/api/v2/silences") or []
    if not include_expired:
        silences = [s for s in silences if s["status"]["state"] != "expired"]
    return sorted(silences, key=lambda s: s["endsAt"])


def expire_silence(alertmanager_url: str, silence_id: str) -> None:
    if not re.fullmatch(r"[0-9a-fA-F-]{8,64}", silence_id):
        raise UserInputError(f"'{silence_id}' is not a silence id")
    _request("DELETE", f"{alertmanager_url}/api/v2/silence/{silence_id}")


def received_alerts(alertmanager_url: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds, with their status (active or suppressed)."""
    return list(_request("GET", f"{alertmanager_url}/api/v2/alerts") or [])
