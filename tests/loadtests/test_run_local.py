"""`opsctl loadtest run` against the real local stack: pass, SLO breach, message accounting,
clock correction and bad targets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.loadtests.conftest import target_args, write_profile
from tests.loadtests.faultproxy import FaultProxy, Faults

pytestmark = pytest.mark.integration

QUIET = {"reconnect": {"rate_per_user_s": 0.0}, "offline_sync": {"rate_per_user_s": 0.0}}


def _summary(out_dir: Path) -> dict:
    return json.loads((out_dir / "summary.json").read_text())


def _run_behind_proxy(
    opsctl, local_stack, profile: Path, out: Path, *, faults: Faults, gateway: int
):
    """`loadtest run` of ``profile`` against one gateway, reached through a FaultProxy."""
    url = urlsplit(local_stack.info.gateway_ws_urls[gateway])
    with FaultProxy(url.hostname, url.port, faults) as proxy:
        proxied = [f"ws://127.0.0.1:{proxy.port}/ws"]
        run = ("loadtest", "run", "--profile", str(profile), "--out-dir", str(out))
        return opsctl(*run, *target_args(local_stack, proxied))


def test_smoke_passes_and_writes_the_report(opsctl, local_stack, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = opsctl(
        "loadtest", "run", "--profile", "smoke", "--out-dir", str(out), *target_args(local_stack)
    )
    assert result.exit_code == 0, result.stderr
    summary = _summary(out)
    assert summary["verdict"]["status"] == "pass"
    assert summary["verdict"]["slo_source"].startswith("profile smoke override: ")
    assert summary["delivery"]["count"] > 50
    assert summary["counters"].get("lost", 0) == 0
    assert summary["counters"]["final_synced_users"] >= 15
    assert summary["connect"]["attempts"] >= 20
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 5
    assert "verdict: pass" in html
    assert "judged against profile smoke override" in html
    assert (out / "verdict.csv").is_file()
    assert (out / "timeline.csv").read_text().startswith("t,users,msgs_per_s")
    assert (out / "locust_stats.csv").is_file()
    assert "report:" in result.stderr
    assert str(out / "report.html") in result.stderr


def test_slowed_gateway_breaches_the_slo(opsctl, local_stack, tmp_path: Path) -> None:
    slo = {"delivery_p50_ms": 500, "delivery_p95_ms": 1000, "delivery_p99_ms": 1500}
    profile = write_profile(tmp_path, users=8, duration_s=6, behaviours=QUIET, slo=slo)
    faults = Faults(delay_s=2.0)
    out = tmp_path / "run"
    result = _run_behind_proxy(opsctl, local_stack, profile, out, faults=faults, gateway=0)
    assert result.exit_code == 1, result.stderr
    checks = {c["name"]: c for c in _summary(out)["verdict"]["checks"]}
    assert checks["delivery p99"]["status"] == "fail"
    assert float(checks["delivery p50"]["measured"].split()[0]) >= 2000


def test_dropped_duplicated_and_reordered_messages_are_counted(
    opsctl, local_stack, tmp_path: Path
) -> None:
    profile = write_profile(
        tmp_path,
        users=10,
        duration_s=8,
        drain_s=6,
        behaviours={**QUIET, "presence": {"rate_per_user_s": 0.0}},
    )
    faults = Faults(drop_every=9, duplicate_every=7, swap_every=11)
    out = tmp_path / "run"
    result = _run_behind_proxy(opsctl, local_stack, profile, out, faults=faults, gateway=1)
    counters = _summary(out)["counters"]
    assert faults.counts["drop"] > 0
    assert faults.counts["dup"] > 0
    assert faults.counts["swap"] > 0
    assert counters.get("duplicated", 0) == faults.counts["dup"]
    assert counters.get("out_of_order", 0) == faults.counts["swap"]
    # Dropped frames come back in the final sync; each is a lost live delivery.
    # (Only users that finished their final sync in the drain window can tell.)
    assert counters["final_synced_users"] >= 8
    lost = counters.get("lost", 0)
    assert 1 <= lost <= faults.counts["drop"] + faults.counts["stranded"]
    assert result.exit_code == 1  # loss, duplicates and reordering breach the SLO


def test_clock_offset_between_workers_is_corrected(opsctl, local_stack, tmp_path: Path) -> None:
    from opsctl.loadtest.profiles import load_profile
    from opsctl.loadtest.session import execute
    from opsctl.loadtest.targets import url_target

    info = local_stack.info
    path = write_profile(
        tmp_path,
        users=8,
        duration_s=10,  # enough deliveries for the latency checks even on a busy machine
        behaviours={
            **QUIET,
            "group": {"rate_per_user_s": 0.0},
            "presence": {"rate_per_user_s": 0.0},
        },
    )
    target = url_target(
        list(info.gateway_ws_urls),
        secret_file=info.jwt_secret_file,
        issuer=info.jwt_issuer,
        audience=info.jwt_audience,
    )
    outcome = execute(
        load_profile(str(path)),
        path,
        target,
        workers=2,
        out_dir=tmp_path / "run",
        worker_env=[{}, {"LOADTEST_CLOCK_SKEW_MS": "4000"}],
        show=False,
    )
    summary = outcome.result.summary
    # Locust numbers workers in the order they connect, so find them by their injected skew.
    clocks = [w["clock"] for w in summary["workers_health"]]
    (skewed,) = [c for c in clocks if c["skew_ms"] == 4000]
    (true,) = [c for c in clocks if c["skew_ms"] == 0]
    assert abs(skewed["offset_ms"] + 4000) < 50  # the estimate undoes the injected skew
    assert abs(true["offset_ms"]) < 50
    # Users are paired across the two workers; uncorrected, half the latencies would be
    # ~ -4 s (clamped, counted) and half ~ +4 s.
    assert summary["counters"].get("negative_latency", 0) == 0
    assert summary["delivery"]["count"] > 20
    assert summary["delivery"]["p99_ms"] < 3000


def test_unreachable_target_fails_fast(opsctl, local_stack, tmp_path: Path) -> None:
    started = time.monotonic()
    result = opsctl(
        "loadtest",
        "run",
        "--profile",
        "smoke",
        *target_args(local_stack, ["ws://127.0.0.1:1/ws"]),
    )
    assert result.exit_code == 2
    assert "unreachable" in result.stderr
    assert "ws://127.0.0.1:1/ws" in result.stderr
    assert time.monotonic() - started < 10
