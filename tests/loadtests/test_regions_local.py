"""`opsctl loadtest run --profile regions` on the session's multi-region stack (staging): the
users spread over both regions, and the report gives cross-region delivery latency apart from
same-region latency, in every output (issue 13 part 6)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from opsctl.errors import ExitCode
from opsctl.local import LocalStack
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration


def test_a_mixed_region_run_reports_cross_and_same_region_latency_apart(
    multi_region_stack: LocalStack,
    opsctl: OpsctlRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = multi_region_stack
    monkeypatch.setenv("OPSCTL_LOCAL_STATE_DIR", str(stack.config.state_dir))
    out = tmp_path / "run"
    result = opsctl("loadtest", "run", "--profile", "regions", "--out-dir", str(out))
    # The latency SLOs of a loaded machine are not what this checks; the run itself must end
    # with a verdict (a pass or an SLO miss), not bad input or an unreliable generator.
    assert result.exit_code in (ExitCode.OK, ExitCode.FAILED), result.stderr
    summary = json.loads((out / "summary.json").read_text())

    placed = summary["regions"]
    urls = {info.name: list(info.gateway_ws_urls) for info in stack.info.regions}
    assert placed["mix"] == {"us-east": 0.5, "eu-central": 0.5}
    assert placed["targets"] == {"us-east": urls["us-east"], "eu-central": urls["eu-central"]}

    by_region = summary["delivery_regions"]
    for locality in ("cross", "same"):
        figures = by_region[locality]
        assert figures["count"] > 0, by_region
        assert 0 <= figures["p50_ms"] <= figures["p99_ms"], by_region
    assert by_region["cross"]["count"] + by_region["same"]["count"] == summary["delivery"]["count"]
    assert summary["counters"].get("duplicated", 0) == 0

    rows = list(csv.DictReader((out / "delivery_regions.csv").open()))
    assert [r["deliveries"] for r in rows] == ["cross-region", "same-region"]
    assert [float(r["p99_ms"]) for r in rows] == [
        by_region["cross"]["p99_ms"],
        by_region["same"]["p99_ms"],
    ]
    assert "Delivery across regions" in (out / "report.html").read_text()
    assert "cross-region" in result.stderr  # the console's table
    print(f"cross-region {by_region['cross']}, same-region {by_region['same']}")
