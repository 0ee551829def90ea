"""`opsctl drill run` on the session's real local stack, short: each drill's verdict (no acked
message lost, none duplicated, recovered) and its expected alerts, as an SRE would run it.

The alerts fire with the stack's real rules, so a drill that expects one holds its fault for
that rule's `for:` (gateway-kill: ImGatewayDown, 1 m); the others take --duration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opsctl.alerts._live import received_alerts
from opsctl.errors import ExitCode
from opsctl.local import LocalStack
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration

SHORT_S = "10"


def _run(
    opsctl: OpsctlRunner, stack: LocalStack, tmp_path: Path, name: str
) -> tuple[int, dict[str, Any], str]:
    report_dir = tmp_path / name
    result = opsctl(
        "drill",
        "run",
        name,
        "--duration",
        SHORT_S,
        "--state-dir",
        str(stack.info.state_dir),
        "--report-dir",
        str(report_dir),
        "-o",
        "json",
    )
    verdict: dict[str, Any] = json.loads(result.stdout) if result.stdout else {}
    if verdict:
        # The report on disk says the same as stdout.
        written = json.loads((report_dir / "drill.json").read_text())
        assert written["status"] == verdict["status"]
    return result.exit_code, verdict, result.stderr


def _assert_clean(verdict: dict[str, Any]) -> None:
    figures = verdict["accounting"]
    assert figures["acked"] >= 20
    assert figures["lost"] == 0
    assert figures["delivered"] == figures["acked"]
    assert figures["duplicated"] == 0
    assert figures["load"]["duplicated"] == 0
    assert figures["load"]["sent_acked"] > 0  # the Locust users ran through the drill
    assert verdict["recover_s"] is not None


def _fired(verdict: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [a for a in verdict["alerts_fired"] if a["name"] == name and not a["before_fault"]]


def test_gateway_kill(local_stack: LocalStack, opsctl: OpsctlRunner, tmp_path: Path) -> None:
    code, verdict, err = _run(opsctl, local_stack, tmp_path, "gateway-kill")
    assert code == ExitCode.OK, err
    _assert_clean(verdict)
    (alert,) = [a for a in _fired(verdict, "ImGatewayDown") if a["labels"].get("node") == "gw-1"]
    assert alert["labels"]["severity"] == "page"


def test_dispatcher_restart(local_stack: LocalStack, opsctl: OpsctlRunner, tmp_path: Path) -> None:
    # ImDispatcherSeqGaps stays active for 15 min after any gap (an earlier test's killed
    # dispatcher, say): then the drill cannot tell that its own crash fired it, and says so.
    before = {
        a["labels"].get("alertname") for a in received_alerts(local_stack.info.alertmanager_url)
    }
    code, verdict, err = _run(opsctl, local_stack, tmp_path, "dispatcher-restart")
    _assert_clean(verdict)
    (check,) = [c for c in verdict["checks"] if c["name"] == "alert ImDispatcherSeqGaps"]
    if check["ok"] is None:  # only when it was active before (it may also resolve and refire)
        assert "ImDispatcherSeqGaps" in before
        assert "already firing before the fault" in check["detail"]
        assert [c["name"] for c in verdict["checks"] if c["ok"] is not True] == [check["name"]]
        assert code == ExitCode.INCONCLUSIVE, err
    else:
        assert check["ok"] is True
        assert _fired(verdict, "ImDispatcherSeqGaps")
        assert code == ExitCode.OK, err


def test_poison_records(local_stack: LocalStack, opsctl: OpsctlRunner, tmp_path: Path) -> None:
    code, verdict, err = _run(opsctl, local_stack, tmp_path, "poison-records")
    assert code == ExitCode.OK, err
    _assert_clean(verdict)
    dead = [c for c in verdict["checks"] if c["name"].startswith("poison record in the DLQ")]
    assert len(dead) == 3
    assert all(c["ok"] for c in dead)


def test_pubsub_disconnect(local_stack: LocalStack, opsctl: OpsctlRunner, tmp_path: Path) -> None:
    code, verdict, err = _run(opsctl, local_stack, tmp_path, "pubsub-disconnect")
    assert code == ExitCode.OK, err
    _assert_clean(verdict)
    (cut,) = [c for c in verdict["checks"] if c["name"] == "pub/sub connections cut"]
    assert cut["ok"]


def test_slow_reader_flood(local_stack: LocalStack, opsctl: OpsctlRunner, tmp_path: Path) -> None:
    code, verdict, err = _run(opsctl, local_stack, tmp_path, "slow-reader-flood")
    assert code == ExitCode.OK, err
    _assert_clean(verdict)
    checks = {c["name"]: c for c in verdict["checks"]}
    assert checks["flood ran"]["ok"]
    assert checks["gateway memory bounded"]["ok"]


def test_kafka_partition_leaderless(
    local_stack: LocalStack, opsctl: OpsctlRunner, tmp_path: Path
) -> None:
    code, verdict, err = _run(opsctl, local_stack, tmp_path, "kafka-partition-leaderless")
    assert code == ExitCode.OK, err
    _assert_clean(verdict)
    (seen,) = [c for c in verdict["checks"] if c["name"] == "partition without a leader"]
    assert seen["ok"] is True, seen
    (alert,) = _fired(verdict, "KafkaOfflinePartitions")
    assert alert["labels"]["severity"] == "page"
