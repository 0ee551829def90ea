"""`opsctl loadtest capacity` on the local stack finds a knee and prints a plan.

The gateway is put behind a proxy that saturates above 24 connections (adds 1.5 s), so the
knee is known: the search must land between 24 and the first breach.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.loadtests.conftest import target_args, write_profile
from tests.loadtests.faultproxy import FaultProxy, Faults

pytestmark = pytest.mark.integration


def test_capacity_search_finds_the_knee_and_plans_pods(opsctl, local_stack, tmp_path: Path) -> None:
    profile = write_profile(
        tmp_path,
        name="capacity",
        users=8,
        spawn_rate=20,
        drain_s=2,
        capacity={
            "start_users": 8,
            "max_users": 64,
            "step_factor": 2,
            "warmup_s": 2,
            "settle_s": 1,
            "measure_s": 4,
            "search_steps": 1,
            "headroom_pct": 20,
        },
        # The proxy adds 1.5 s above 24 connections: these bounds put the knee there.
        slo={
            "delivery_p50_ms": 700,
            "delivery_p95_ms": 1200,
            "delivery_p99_ms": 1400,
            "max_error_ratio": 0.01,
        },
    )
    gateway = urlsplit(local_stack.info.gateway_ws_urls[0])
    faults = Faults(overload_above=24, overload_delay_s=1.5)
    with FaultProxy(gateway.hostname, gateway.port, faults) as proxy:
        result = opsctl(
            "loadtest",
            "capacity",
            "--profile",
            str(profile),
            "--plan-stack",
            "local",
            "--out-dir",
            str(tmp_path / "cap"),
            "--output",
            "json",
            *target_args(local_stack, [f"ws://127.0.0.1:{proxy.port}/ws"]),
        )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    search = report["search"]
    users = [step["users"] for step in search["steps"]]
    assert users[:3] == [8, 16, 32]  # step load: 8 and 16 pass, 32 (> 24 connections) breaks
    assert search["first_breach_users"] in (24, 32)
    assert search["knee_users"] in (16, 24)
    assert search["steps"][2]["status"] == "fail"
    assert search["slo_source"].startswith("profile capacity override: delivery p50 <= 700 ms")
    assert search["slo_source"].endswith("otherwise stack local SLOs")
    plan = report["plan"][0]
    assert plan["region"] == "local"
    assert search["users_per_pod"] == search["knee_users"]  # one gateway behind the proxy
    assert plan["pods_needed"] == math.ceil(20000 / (search["knee_users"] * 0.8))
