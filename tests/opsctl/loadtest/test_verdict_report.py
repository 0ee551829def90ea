"""Verdict logic, generator honesty and the HTML/CSV report."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from opsctl.errors import ExitCode
from opsctl.loadtest.profiles import load_profile, profile_path
from opsctl.loadtest.report import svg_chart, write_reports
from opsctl.loadtest.runner import merge_workers, saturated
from opsctl.loadtest.slo import StackSlos, apply_slo
from opsctl.loadtest.verdict import Status, judge
from opsctl.paths import DEFAULT_INFRA_DIR

pytestmark = pytest.mark.unit

# peak against prod: the stack's SLOs, p99 200 ms, connects 99.9 %, availability 99.95 %
SLO = apply_slo(
    load_profile("peak"), StackSlos.load(DEFAULT_INFRA_DIR, "prod"), profile_path("peak")
)


def _summary(**changes):
    summary = {
        "profile": "peak",
        "delivery": {"count": 1000, "p50_ms": 20.0, "p95_ms": 60.0, "p99_ms": 120.0},
        "connect": {"attempts": 1000, "failures": 0},
        "requests": {"total": 5000, "failures": 1},
        "counters": {"lost": 0, "duplicated": 0, "out_of_order": 0},
        "generator_saturated": False,
        "timeline": [
            {"t": 1.0, "users": 10, "msgs_per_s": 5, "p50_ms": 10, "p95_ms": 20, "p99_ms": 30},
            {"t": 2.0, "users": 20, "msgs_per_s": 9, "p50_ms": 12, "p95_ms": 25, "p99_ms": None},
        ],
        "entries": [],
        "workers_health": [],
    }
    summary.update(changes)
    return summary


def test_a_clean_run_passes() -> None:
    verdict = judge(_summary(), SLO)
    assert verdict.status is Status.passed
    assert verdict.exit_code is ExitCode.OK


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"delivery": {"count": 10, "p50_ms": 20, "p95_ms": 60, "p99_ms": 400}}, "delivery p99"),
        (
            {"delivery": {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None}},
            "delivery p99",
        ),
        ({"connect": {"attempts": 1000, "failures": 10}}, "connect success"),
        ({"counters": {"lost": 1}}, "lost messages"),
        ({"counters": {"duplicated": 2}}, "duplicated messages"),
        ({"counters": {"out_of_order": 1}}, "out-of-order messages"),
        ({"requests": {"total": 100, "failures": 5}}, "error ratio"),
    ],
)
def test_each_breach_fails_with_exit_1(changes, check: str) -> None:
    verdict = judge(_summary(**changes), SLO)
    assert verdict.status is Status.failed
    assert verdict.exit_code is ExitCode.FAILED
    assert check in {c.name for c in verdict.checks if c.status is Status.failed}


def test_a_saturated_generator_is_never_a_pass() -> None:
    verdict = judge(_summary(generator_saturated=True), SLO)
    assert verdict.status is Status.unreliable
    assert verdict.exit_code is ExitCode.INCONCLUSIVE
    latency = [c for c in verdict.checks if c.name.startswith("delivery")]
    assert all(c.status is Status.unreliable for c in latency)


def test_saturation_needs_two_consecutive_bad_samples() -> None:
    ok = [[1, 50, 5], [2, 95, 5], [3, 50, 5], [4, 50, 150]]
    assert not saturated(ok, 90, 100)
    assert saturated([[1, 95, 5], [2, 50, 150]], 90, 100)
    counters, workers = merge_workers(
        [
            {"worker_index": 1, "counters": {"lost": 2}, "health": [[1, 99, 1], [2, 99, 1]]},
            {"worker_index": 0, "counters": {"lost": 1, "duplicated": 1}, "health": []},
        ],
        90,
        100,
    )
    assert counters == {"lost": 3, "duplicated": 1}
    assert [w["saturated"] for w in workers] == [False, True]


def test_reports_are_written(tmp_path: Path) -> None:
    summary = _summary()
    verdict = judge(summary, SLO)
    paths = write_reports(tmp_path, summary, verdict)
    html = paths["html"].read_text()
    assert html.count("<svg") == 5
    assert "verdict: pass" in html
    assert "<polyline" in html
    assert "judged against stack prod SLOs" in html
    rows = list(csv.DictReader(paths["timeline"].open()))
    assert [r["users"] for r in rows] == ["10", "20"]
    checks = list(csv.DictReader(paths["verdict_csv"].open()))
    assert {r["slo_source"] for r in checks} == {"stack prod SLOs"}
    assert [r["threshold"] for r in checks if r["check"] == "delivery p99"] == ["<= 200 ms"]
    assert '"status": "pass"' in paths["summary"].read_text()
    assert '"slo_source": "stack prod SLOs"' in paths["summary"].read_text()


def test_svg_chart_skips_missing_points() -> None:
    svg = svg_chart("x", {"a": [(0, 1.0), (1, None), (2, 3.0)]}, "ms")
    points = svg.split('points="')[1].split('"')[0].split()
    assert len(points) == 2
    assert "no data" in svg_chart("empty", {"a": [(0, None)]}, "ms")
