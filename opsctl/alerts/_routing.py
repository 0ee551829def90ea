"""Alertmanager configuration generated from the spec's alert routing (teams and receivers).

Each team gets one route per severity: ``page`` goes to its page receiver, ``ticket`` to its
ticket receiver. Receiver secrets are never in the config: they are read from files that
Alertmanager mounts from Kubernetes Secrets (``/etc/alertmanager/secrets/<secret>/<key>``).
"""

from __future__ import annotations

from typing import Any

from opsctl.spec import Receiver, StackSpec

SECRETS_DIR = "/etc/alertmanager/secrets"
FALLBACK_RECEIVER = "unrouted"  # catches what no team route matches; the coverage gate forbids it
_SECRET_KEYS = {"pagerduty": "routing-key", "slack": "url", "webhook": "token"}


def secret_file(receiver: Receiver) -> str:
    return f"{SECRETS_DIR}/{receiver.secret_ref}/{_SECRET_KEYS[receiver.type]}"


def _receiver(receiver: Receiver) -> dict[str, Any]:
    if receiver.type == "pagerduty":
        return {
            "name": receiver.name,
            "pagerduty_configs": [{"routing_key_file": secret_file(receiver)}],
        }
    if receiver.type == "slack":
        slack = {"api_url_file": secret_file(receiver), "send_resolved": True}
        return {"name": receiver.name, "slack_configs": [slack]}
    config: dict[str, Any] = {"url": receiver.url, "send_resolved": True}
    if receiver.secret_ref:
        config["http_config"] = {"authorization": {"credentials_file": secret_file(receiver)}}
    return {"name": receiver.name, "webhook_configs": [config]}


def expected_receiver(spec: StackSpec, team: str, severity: str) -> str | None:
    for candidate in spec.alerting.teams:
        if candidate.name == team:
            return candidate.page_receiver if severity == "page" else candidate.ticket_receiver
    return None


def alertmanager_config(spec: StackSpec) -> dict[str, Any]:
    routes = []
    for team in spec.alerting.teams:
        for severity, receiver, repeat in (
            ("page", team.page_receiver, "1h"),
            ("ticket", team.ticket_receiver, "12h"),
        ):
            routes.append(
                {
                    "matchers": [f'team="{team.name}"', f'severity="{severity}"'],
                    "receiver": receiver,
                    "repeat_interval": repeat,
                }
            )
    # The fallback sends to the first team's ticket receiver, so nothing is ever dropped.
    fallback_target = next(
        r for r in spec.alerting.receivers if r.name == spec.alerting.teams[0].ticket_receiver
    )
    fallback = {**_receiver(fallback_target), "name": FALLBACK_RECEIVER}
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": FALLBACK_RECEIVER,
            "group_by": ["alertname", "region", "slo"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "inhibit_rules": [
            # A page already covers the ticket for the same SLO and region.
            {
                "source_matchers": ['severity="page"'],
                "target_matchers": ['severity="ticket"'],
                "equal": ["slo", "region"],
            },
            # A gateway that is down explains its other symptoms.
            {
                "source_matchers": ['alertname="ImGatewayDown"'],
                "target_matchers": ['alertname=~"ImGateway.+"', 'alertname!="ImGatewayDown"'],
                "equal": ["instance"],
            },
        ],
        "receivers": [fallback, *(_receiver(r) for r in spec.alerting.receivers)],
    }
