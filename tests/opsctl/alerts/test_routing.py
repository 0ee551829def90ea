"""Alertmanager routing is generated from the spec's teams and receivers; secrets stay out."""

from __future__ import annotations

import pytest
import yaml

from opsctl.alerts import alertmanager_config
from opsctl.alerts._routing import FALLBACK_RECEIVER, expected_receiver
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack

pytestmark = pytest.mark.unit


def test_each_team_routes_pages_and_tickets_to_its_receivers() -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, "prod")
    routes = alertmanager_config(spec)["route"]["routes"]
    table = {tuple(route["matchers"]): route["receiver"] for route in routes}
    assert table[('team="im-data"', 'severity="page"')] == "im-data-pager"
    assert table[('team="im-data"', 'severity="ticket"')] == "im-tickets"
    assert table[('team="im-platform"', 'severity="page"')] == "im-platform-pager"
    assert expected_receiver(spec, "im-data", "page") == "im-data-pager"
    assert expected_receiver(spec, "nobody", "page") is None


def test_secrets_are_files_never_values() -> None:
    config = alertmanager_config(load_stack(DEFAULT_INFRA_DIR, "prod"))
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    pager = receivers["im-platform-pager"]["pagerduty_configs"][0]
    secret = "alertmanager-pagerduty-im-platform"
    assert pager == {"routing_key_file": f"/etc/alertmanager/secrets/{secret}/routing-key"}
    tickets = receivers["im-tickets"]["webhook_configs"][0]
    assert tickets["url"] == "https://tickets.im.internal/hooks/alertmanager"
    assert tickets["http_config"]["authorization"]["credentials_file"].endswith("/token")


def test_the_fallback_exists_but_is_not_a_team_route() -> None:
    config = alertmanager_config(load_stack(DEFAULT_INFRA_DIR, "staging"))
    assert config["route"]["receiver"] == FALLBACK_RECEIVER
    assert FALLBACK_RECEIVER not in {route["receiver"] for route in config["route"]["routes"]}
    assert yaml.safe_dump(config)  # serialisable as Alertmanager reads it
