"""Users across regions: the profile's ``regions`` (schema, exit 2 naming the field), the
placement of users from their index, the target's regions, and how a session tells a
cross-region delivery from a same-region one (issue 13 part 6)."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadtests.clock import ClockSync
from loadtests.config import RunConfig
from loadtests.session import ImSession
from opsctl.errors import ExitCode, InvalidInputFile
from opsctl.loadtest.placement import (
    CROSS,
    SAME,
    connect_order,
    is_cross_pair,
    region_of,
    same_pair_shares,
)
from opsctl.loadtest.profiles import PROFILES_DIR, check_regions, load_profile, profile_path
from opsctl.loadtest.report import region_rows, render_html, write_regions_csv
from opsctl.loadtest.runner import RunOptions, _locust_env
from opsctl.loadtest.targets import Target

pytestmark = pytest.mark.unit

BASE = yaml.safe_load((PROFILES_DIR / "regions.yaml").read_text())
TWO = {"us-east": 0.5, "eu-central": 0.5}


def _write(tmp_path: Path, regions: Any) -> Path:
    document = copy.deepcopy(BASE)
    document["regions"] = regions
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _problems(tmp_path: Path, regions: Any) -> list[tuple[str, str]]:
    path = _write(tmp_path, regions)
    with pytest.raises(InvalidInputFile) as caught:
        load_profile(str(path))
    assert caught.value.exit_code is ExitCode.BAD_INPUT
    assert all(p.file == str(path) for p in caught.value.problems)
    return [(p.path, p.message) for p in caught.value.problems]


def test_the_shipped_regions_profile_places_half_the_users_in_each_region() -> None:
    profile = load_profile("regions")
    assert profile.regions is not None
    assert profile.regions.mix == TWO
    assert profile.regions.cross_share == 0.5
    assert load_profile("smoke").regions is None  # a profile without a mix is unchanged


@pytest.mark.parametrize(
    ("regions", "field", "words"),
    [
        ({"mix": {"us-east": 0.5, "eu-central": 0.4}}, "regions", "sum to 0.9"),
        ({"mix": {}}, "regions.mix", "at least 1"),
        ({"mix": {"us-east": 0}}, "regions.mix.us-east", "greater than 0"),
        ({"mix": {"us-east": 1.5}}, "regions.mix.us-east", "less than or equal to 1"),
        ({"mix": {"US East": 1.0}, "cross_share": 0}, "regions.mix.US East", "pattern"),
        ({"mix": {"us-east": 1.0}}, "regions", "needs at least two regions"),
        ({"mix": TWO, "cross_share": 1.2}, "regions.cross_share", "less than or equal to 1"),
        ({"mix": {"a": 0.7, "b": 0.3}, "cross_share": 0.8}, "regions", "at most 0.6"),
        ({"mix": TWO, "crosss": 0.5}, "regions.crosss", "unknown field"),
        ({"cross_share": 0.5}, "regions.mix", "required"),
    ],
)
def test_a_bad_region_mix_names_its_field(
    tmp_path: Path, regions: dict[str, Any], field: str, words: str
) -> None:
    problems = _problems(tmp_path, regions)
    assert any(path == field and words in message for path, message in problems), problems


junk = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8)
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(where=st.sampled_from(["regions", "mix", "share", "cross_share"]), value=junk)
def test_junk_anywhere_in_regions_is_exit_2_naming_a_regions_field(
    tmp_path: Path, where: str, value: Any
) -> None:
    regions: Any = {"mix": dict(TWO), "cross_share": 0.5}
    if where == "regions":
        regions = value
    elif where == "mix":
        regions["mix"] = value
    elif where == "share":
        regions["mix"]["us-east"] = value
    else:
        regions["cross_share"] = value
    path = _write(tmp_path, regions)
    failure: InvalidInputFile | None = None
    try:
        profile = load_profile(str(path))
    except InvalidInputFile as error:
        failure = error
    if failure is not None:
        assert failure.exit_code is ExitCode.BAD_INPUT
        assert all(p.path.startswith("regions") for p in failure.problems), failure.problems
    else:  # only values valid after all get through (None: no mix; a number that fits)
        assert profile.regions is None or abs(sum(profile.regions.mix.values()) - 1) < 1e-6


def _placed(mix: dict[str, float], cross: float, users: int) -> tuple[Counter[str], float]:
    regions = [region_of(i, mix, cross) for i in range(users)]
    pairs = users // 2
    crossing = sum(regions[2 * k] != regions[2 * k + 1] for k in range(pairs))
    return Counter(regions), crossing / pairs


@pytest.mark.parametrize(
    ("mix", "cross"),
    [
        (TWO, 0.5),
        (TWO, 0.0),
        (TWO, 1.0),
        ({"a": 0.7, "b": 0.3}, 0.4),
        ({"a": 0.5, "b": 0.3, "c": 0.2}, 0.5),
    ],
)
def test_users_are_placed_by_the_mix_with_the_share_of_pairs_across_regions(
    mix: dict[str, float], cross: float
) -> None:
    users = 2000
    counts, crossing = _placed(mix, cross, users)
    for region, share in mix.items():
        assert counts[region] / users == pytest.approx(share, abs=0.01)
    assert crossing == pytest.approx(cross, abs=0.001)
    # Pure function of the index: every worker places every user alike.
    assert [region_of(i, mix, cross) for i in range(50)] == [
        region_of(i, mix, cross) for i in range(50)
    ]


def test_a_few_users_already_have_pairs_of_both_kinds() -> None:
    regions = [region_of(i, TWO, 0.5) for i in range(4)]
    assert regions[0] == regions[1]  # pair 0: one region
    assert regions[2] != regions[3]  # pair 1: across
    assert [is_cross_pair(k, 0.5) for k in range(6)] == [False, True] * 3


def test_same_region_pairs_make_up_for_an_uneven_mix() -> None:
    same = same_pair_shares({"a": 0.7, "b": 0.3}, 0.4)
    assert same["a"] == pytest.approx(0.8333, abs=1e-3)  # (0.7 - 0.4 * 0.5) / 0.6
    assert same_pair_shares(TWO, 0.5) == pytest.approx(TWO)
    with pytest.raises(ValueError, match=r"at most 0\.6"):
        same_pair_shares({"a": 0.7, "b": 0.3}, 0.61)


def test_a_user_tries_its_own_region_first_then_the_others() -> None:
    targets = {"us-east": ("ws://us/1", "ws://us/2"), "eu-central": ("ws://eu/1",)}
    assert connect_order("eu-central", 3, targets) == [
        ("eu-central", "ws://eu/1"),
        ("us-east", "ws://us/2"),
    ]
    assert connect_order("us-east", 2, targets)[0] == ("us-east", "ws://us/1")


def _target(tmp_path: Path, regions: dict[str, tuple[str, ...]]) -> Target:
    urls = next(iter(regions.values()), ("ws://127.0.0.1:1/ws",))
    return Target(urls, tmp_path / "secret", "iss", "aud", 1, "test", regions=regions)


def test_the_target_must_have_every_region_of_the_mix(tmp_path: Path) -> None:
    profile, path = load_profile("regions"), profile_path("regions")
    check_regions(profile, path, {"us-east": ("ws://a",), "eu-central": ("ws://b",)}, "stack")
    with pytest.raises(InvalidInputFile) as caught:
        check_regions(profile, path, {"us-east": ("ws://a",)}, "the local stack")
    (problem,) = caught.value.problems
    assert problem.path == "regions.mix.eu-central"
    assert "not in the local stack" in problem.message
    assert path.read_text().splitlines()[problem.line - 1].lstrip().startswith("mix:")
    with pytest.raises(InvalidInputFile) as caught:
        check_regions(profile, path, {}, "the local stack in /x")
    assert "has no regions" in caught.value.problems[0].message
    check_regions(load_profile("smoke"), profile_path("smoke"), {}, "any")  # no mix: no check


def test_each_locust_process_learns_every_region_s_gateways(tmp_path: Path) -> None:
    regions = {"us-east": ("ws://us/1",), "eu-central": ("ws://eu/1", "ws://eu/2")}
    profile = load_profile("regions")
    options = RunOptions(profile, profile_path("regions"), _target(tmp_path, regions))
    config = RunConfig.from_env(_locust_env(options, tmp_path, "lt1"))
    assert config.region_targets == regions
    smoke = RunOptions(load_profile("smoke"), profile_path("smoke"), _target(tmp_path, regions))
    assert _locust_env(smoke, tmp_path, "lt1")["LOADTEST_REGION_TARGETS"] == ""


def _session(region: str, routes: tuple[tuple[str, str], ...] = ()) -> tuple[ImSession, list]:
    records: list[tuple[Any, ...]] = []
    session = ImSession(
        url=routes[0][1] if routes else "ws://x/ws",
        region=region,
        routes=routes,
        user_id="lt-u0",
        sign=lambda user: "token",
        counters=Counter(),
        clock=ClockSync(),
        record=lambda *args: records.append(args),
    )
    return session, records


def test_a_delivery_is_named_cross_or_same_by_the_sender_s_stamped_region() -> None:
    session, records = _session("us-east")
    sent = session.clock.now_ms() - 20
    message = {"op": "message", "conversation_id": "dm:a:b", "kind": "dm", "from": "lt-u1"}
    session.handle({**message, "seq": 1, "body": f"{sent:.1f}|eu-central|xx"})
    session.handle({**message, "seq": 2, "body": f"{sent:.1f}|us-east|xx"})
    session.handle({**message, "seq": 3, "body": f"{sent:.1f}|xx"})  # no region stamped
    assert [r[1] for r in records] == [f"dm/{CROSS}", f"dm/{SAME}", "dm"]
    plain, plain_records = _session("")
    plain.handle({**message, "seq": 1, "body": f"{sent:.1f}|eu-central|xx"})
    assert [r[1] for r in plain_records] == ["dm"]


def test_a_region_that_does_not_answer_moves_the_user_to_the_next_one() -> None:
    routes = (("eu-central", "ws://127.0.0.1:1/ws"), ("us-east", "ws://127.0.0.1:2/ws"))
    session, _records = _session("eu-central", routes)
    assert not session.connect(sync={})  # nothing listens there
    assert (session.region, session.url) == routes[1]
    assert session.counters["region_failovers"] == 1
    assert not session.connect(sync={})
    assert (session.region, session.url) == routes[0]


def test_the_report_gives_cross_region_latency_apart_from_same_region(tmp_path: Path) -> None:
    from opsctl.loadtest.slo import StackSlos, apply_slo
    from opsctl.loadtest.verdict import judge

    figures = {"count": 3, "p50_ms": 40.0, "p95_ms": 60.0, "p99_ms": 70.0, "max_ms": 70}
    summary = {
        "profile": "regions",
        "delivery_regions": {CROSS: {**figures, "p50_ms": 90.0}, SAME: figures},
        "regions": {"mix": TWO, "cross_share": 0.5},
    }
    rows = region_rows(summary)
    assert [(r["deliveries"], r["p50_ms"]) for r in rows] == [
        ("cross-region", 90.0),
        ("same-region", 40.0),
    ]
    path = tmp_path / "delivery_regions.csv"
    write_regions_csv(path, summary)
    assert path.read_text().splitlines()[1].startswith("cross-region,3,90.0,")
    applied = apply_slo(load_profile("regions"), StackSlos.default(), profile_path("regions"))
    page = render_html(summary, judge(summary, applied))
    assert "Delivery across regions" in page
    assert region_rows({"delivery_regions": {}}) == []
