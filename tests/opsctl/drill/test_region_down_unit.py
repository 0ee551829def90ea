"""The region-down drill's logic on made-up figures: where the probe is placed, the RPO
figures, its background load across regions; bad input to it exits 2 before anything runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.homes import shard_of
from gateway.shardmap import ShardMap
from opsctl.drill import find
from opsctl.drill._region import chosen_region, placement, stranded
from opsctl.drill._run import _profile_text
from opsctl.errors import ExitCode, UserInputError
from opsctl.loadtest.profiles import parse_profile
from tests.support import OpsctlRunner

pytestmark = pytest.mark.unit

REGIONS = ("eu-central", "us-east")


def _stack() -> SimpleNamespace:
    regions = [
        SimpleNamespace(name=name, gateway_ws_urls=(f"ws://{name}/1", f"ws://{name}/2"))
        for name in REGIONS
    ]
    return SimpleNamespace(info=SimpleNamespace(regions=regions))


def test_region_down_is_a_multi_region_drill_without_gated_alerts() -> None:
    drill = find("region-down")
    assert drill.available
    assert drill.multi_region
    assert drill.expected_alerts == ()
    assert drill.listing()["stack"] == "multi-region"
    assert find("gateway-kill").listing()["stack"] == "one-region"


def test_the_region_taken_down_is_named_or_the_last() -> None:
    stack = _stack()
    assert chosen_region(stack, None) == "us-east"
    assert chosen_region(stack, "eu-central") == "eu-central"
    with pytest.raises(UserInputError, match="not a region"):
        chosen_region(stack, "ap-east")


def test_the_probe_has_a_pair_homed_in_each_region_and_a_sender_in_each() -> None:
    placed = placement(_stack(), "us-east", "t1")
    homes = ShardMap(0, REGIONS)
    convs = [f"dm:{min(a, b)}:{max(a, b)}" for a, b in placed.users]
    assert [homes.entry(shard_of(c)).home for c in convs] == ["us-east", "eu-central"]
    for devices in placed.routes:  # a0, a1, b0, b1: the senders a0 and b1 apart
        assert [d[0] for d in devices] == [
            "ws://us-east/1",
            "ws://eu-central/1",
            "ws://us-east/1",
            "ws://eu-central/1",
        ]
        assert all(len(d) == 4 for d in devices)  # then every other gateway, to fail over
    assert placed.keepalive.ping_timeout_s < 20  # a frozen gateway is noticed in seconds


def test_rpo_counts_what_the_survivor_lacked_by_when_it_was_acked() -> None:
    acked = {
        "m1": ("c", 90.0),  # before the freeze, on the survivor
        "m2": ("c", 95.0),  # before the freeze, missing: not replicated
        "m3": ("c", 99.0),  # before the freeze, missing
        "m4": ("c", 101.0),  # between the freeze and the failover, missing
        "m5": ("c", 110.0),  # after the failover
    }
    figures = stranded(acked, {"m1", "m5"}, frozen_at=100.0, failed_over=105.0)
    assert figures == {
        "rpo_messages": 2,
        "rpo_s": 5.0,
        "stranded_acked_before_failover": 1,
        "acked_before_freeze": 3,
    }
    clean = stranded(acked, set(acked), frozen_at=100.0, failed_over=105.0)
    assert (clean["rpo_messages"], clean["rpo_s"]) == (0, 0.0)


def test_the_background_load_spreads_over_the_regions() -> None:
    profile = parse_profile(_profile_text(30, 10, list(REGIONS)), "drill.yaml")
    assert profile.regions is not None
    assert profile.regions.mix == {"eu-central": 0.5, "us-east": 0.5}
    assert profile.regions.cross_share == 0.5
    assert parse_profile(_profile_text(30, 10), "drill.yaml").regions is None


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--region", "us-east"), "runs on the one-region stack"),
        (("--stack", "prod"), "local stack only"),
    ],
)
def test_region_input_to_a_one_region_drill_exits_2(
    opsctl: OpsctlRunner, args: tuple[str, ...], words: str
) -> None:
    result = opsctl("drill", "run", "gateway-kill", *args)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert words in result.stderr


def test_region_down_without_a_stack_says_how_to_start_one(
    opsctl: OpsctlRunner, tmp_path: Path
) -> None:
    result = opsctl("drill", "run", "region-down", "--state-dir", str(tmp_path / "none"))
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "opsctl local up --stack staging" in result.stderr


def _run_on(view: object, monkeypatch: pytest.MonkeyPatch) -> object:
    import opsctl.region
    from opsctl.drill import DrillContext
    from opsctl.drill._region import RegionDownRun

    stack = _stack()
    stack.info.alertmanager_url = "http://127.0.0.1:9"
    stack.info.jwt_secret_file = Path("/nonexistent")
    stack.info.jwt_issuer = stack.info.jwt_audience = "x"
    stack.config = SimpleNamespace(spec_stack="staging")
    monkeypatch.setattr("opsctl.drill._region._regions", lambda stack: None)
    monkeypatch.setattr(opsctl.region, "read_map", lambda regions: view)
    ctx = DrillContext(stack=stack, report_dir=Path("/nonexistent"), suffix="t")  # type: ignore[arg-type]
    ctx.state["region"] = "us-east"
    return RegionDownRun(find("region-down"), stack, ctx, 10, lambda message: None)


def test_the_drill_starts_only_from_the_regions_at_home(monkeypatch: pytest.MonkeyPatch) -> None:
    from opsctl.region import MapView

    home = {r: n / 4096 for r, n in ShardMap(0, REGIONS).share().items()}
    _run_on(MapView(3, home, 0, 0), monkeypatch).precheck()  # type: ignore[attr-defined]
    for view in (
        MapView(4, {"eu-central": 1.0, "us-east": 0.0}, 0, 0),  # us-east evacuated
        MapView(4, home, 12, 0),  # an evacuation interrupted
    ):
        with pytest.raises(UserInputError, match="not at their homes") as caught:
            _run_on(view, monkeypatch).precheck()  # type: ignore[attr-defined]
        assert "opsctl region restore" in str(caught.value.hint)
