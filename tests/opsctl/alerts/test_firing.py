"""A real firing alert on the local stack: a gateway stops, Prometheus fires, opsctl lists it,
Alertmanager receives it, and an opsctl silence suppresses it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from opsctl.alerts._live import list_silences, received_alerts
from opsctl.errors import ExitCode
from opsctl.local import LocalStack
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


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
    endpoints = ["--prometheus-url", info.prometheus_url]

    def firing() -> list[dict[str, Any]]:
        result = opsctl("alerts", "list", *endpoints, "-o", "json")
        assert result.exit_code == ExitCode.OK, result.stderr
        return [a for a in json.loads(result.stdout)
                if a["alertname"] == "ImGatewayDown" and a["state"] == "firing"
                and a["labels"].get("node") == gateway_stopped]  # fmt: skip

    (alert,) = wait_for(firing, 150, "ImGatewayDown to fire in Prometheus")
    assert alert["labels"]["severity"] == "page"
    table = opsctl("alerts", "list", *endpoints)
    assert "ImGatewayDown" in table.stdout

    def in_alertmanager() -> list[dict[str, Any]]:
        return [a for a in received_alerts(info.alertmanager_url)
                if a["labels"].get("alertname") == "ImGatewayDown"]  # fmt: skip

    (received,) = wait_for(in_alertmanager, 60, "Alertmanager to receive ImGatewayDown")
    assert received["status"]["state"] == "active"

    created = opsctl(
        "alerts", "silence", "create", "--alertmanager-url", info.alertmanager_url,
        "--matcher", "alertname=ImGatewayDown", "--matcher", f"node={gateway_stopped}",
        "--author", "pytest", "--comment", "drill: gateway stopped on purpose", "--expires", "10m",
        "-o", "json",
    )  # fmt: skip
    assert created.exit_code == ExitCode.OK, created.stderr
    silence_id = json.loads(created.stdout)["silenceID"]
    try:
        suppressed = wait_for(
            lambda: [a for a in in_alertmanager() if a["status"]["state"] == "suppressed"],
            30, "the silence to suppress the alert",
        )  # fmt: skip
        assert silence_id in suppressed[0]["status"]["silencedBy"]
        listed = opsctl("alerts", "silence", "list", "--alertmanager-url", info.alertmanager_url,
                        "-o", "json")  # fmt: skip
        (mine,) = [s for s in json.loads(listed.stdout) if s["id"] == silence_id]
        assert (mine["createdBy"], mine["status"]["state"]) == ("pytest", "active")
    finally:
        expired = opsctl("alerts", "silence", "expire", silence_id,
                         "--alertmanager-url", info.alertmanager_url)  # fmt: skip
    assert expired.exit_code == ExitCode.OK, expired.stderr
    assert silence_id not in {s["id"] for s in list_silences(info.alertmanager_url)}
