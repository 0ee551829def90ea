"""A real firing alert on the local stack: a gateway stops, Prometheus fires, opsctl lists it,
Alertmanager receives it, and an opsctl silence suppresses it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from opsctl.alerts._live import list_silences, received_alerts
from opsctl.errors import ExitCode
from opsctl.local import LocalStack
from tests.support import OpsctlRunner, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway_stopped(local_stack: LocalStack) -> Iterator[str]:
    local_stack.stop("gw-2")
    try:
        yield "gw-2"
    finally:
        local_stack.start("gw-2")


def test_gateway_down_fires_is_listed_received_and_silenced(
    local_stack: LocalStack, gateway_stopped: str, opsctl: OpsctlRunner
) -> None:
    info = local_stack.info
    prometheus = ("--prometheus-url", info.prometheus_url)
    alertmanager = ("--alertmanager-url", info.alertmanager_url)

    def firing() -> list[dict[str, Any]]:
        result = opsctl("alerts", "list", *prometheus, "-o", "json")
        assert result.exit_code == ExitCode.OK, result.stderr
        return [
            alert
            for alert in json.loads(result.stdout)
            if (alert["alertname"], alert["state"]) == ("ImGatewayDown", "firing")
            and alert["labels"].get("node") == gateway_stopped
        ]

    (alert,) = wait_for("ImGatewayDown to fire in Prometheus", firing, timeout=150, interval=1)
    assert alert["labels"]["severity"] == "page"
    table = opsctl("alerts", "list", *prometheus)
    assert "ImGatewayDown" in table.stdout

    def in_alertmanager(state: str | None = None) -> list[dict[str, Any]]:
        return [
            alert
            for alert in received_alerts(info.alertmanager_url)
            if alert["labels"].get("alertname") == "ImGatewayDown"
            and state in (None, alert["status"]["state"])
        ]

    (received,) = wait_for(
        "Alertmanager to receive ImGatewayDown", in_alertmanager, timeout=60, interval=1
    )
    assert received["status"]["state"] == "active"

    matchers = ("--matcher", "alertname=ImGatewayDown", "--matcher", f"node={gateway_stopped}")
    why = ("--author", "pytest", "--comment", "drill: gateway stopped on purpose")
    expires = ("--expires", "10m")
    created = opsctl(
        "alerts", "silence", "create", *alertmanager, *matchers, *why, *expires, "-o", "json"
    )
    assert created.exit_code == ExitCode.OK, created.stderr
    silence_id = json.loads(created.stdout)["silenceID"]
    try:
        suppressed = wait_for(
            "the silence to suppress the alert",
            lambda: in_alertmanager("suppressed"),
            timeout=30,
            interval=1,
        )
        assert silence_id in suppressed[0]["status"]["silencedBy"]
        listed = opsctl("alerts", "silence", "list", *alertmanager, "-o", "json")
        (mine,) = [s for s in json.loads(listed.stdout) if s["id"] == silence_id]
        assert (mine["createdBy"], mine["status"]["state"]) == ("pytest", "active")
    finally:
        expired = opsctl("alerts", "silence", "expire", silence_id, *alertmanager)
    assert expired.exit_code == ExitCode.OK, expired.stderr
    assert silence_id not in {s["id"] for s in list_silences(info.alertmanager_url)}
