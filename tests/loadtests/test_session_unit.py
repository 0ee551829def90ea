"""The Locust side without Locust: a session's requests, replies and deliveries against a fake
connection, and the LOADTEST_* environment contract.

Nothing here may import locust (or loadtests.reporting / locustfile): importing it
gevent-patches the whole test process.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from loadtests.clock import ClockSync
from loadtests.config import ENV_VARS, RunConfig
from loadtests.imclient import Closed
from loadtests.session import ImSession, Reply, backoff_s
from opsctl.loadtest.oncluster import RunShape, build_manifests
from opsctl.loadtest.profiles import load_profile, profile_path
from opsctl.loadtest.runner import RunOptions, _locust_env
from opsctl.loadtest.sizing import size_run
from opsctl.loadtest.targets import Target

pytestmark = pytest.mark.unit


class FakeConnection:
    """Answers each sent frame with what ``answer`` returns (a list of frames, or Closed)."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.sent: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self.closed = False

    def send(self, frame: dict[str, Any]) -> None:
        self.sent.append(frame)
        self.pending += self.answer(frame)

    def receive(self, timeout_s: float) -> list[dict[str, Any]]:
        if self.pending == ["close"]:
            raise Closed(4009, "draining")
        frames, self.pending = self.pending, []
        return frames

    def close(self) -> None:
        self.closed = True


def _session(answer) -> tuple[ImSession, list[tuple], FakeConnection]:
    records: list[tuple] = []
    session = ImSession(
        url="ws://127.0.0.1:1/ws",
        user_id="lt-u0",
        sign=lambda user: "token",
        counters=Counter(),
        clock=ClockSync(),
        record=lambda *args: records.append(args),
    )
    conn = FakeConnection(answer)
    session.conn = conn  # type: ignore[assignment]
    return session, records, conn


def test_a_send_is_matched_to_its_ack_by_ref() -> None:
    session, records, conn = _session(lambda f: [{"op": "ack", "ref": f["ref"]}])
    assert session.send({"to": "lt-u1"}, "dm", "xx")
    frame = conn.sent[0]
    assert frame["op"] == "send"
    assert frame["to"] == "lt-u1"
    assert frame["client_msg_id"] == "lt-u0-1"
    assert frame["body"].endswith("|xx")
    ((kind, name, elapsed, error),) = records
    assert (kind, name, error) == ("SEND", "dm", None)
    assert elapsed >= 0
    assert session.counters["sent_acked"] == 1
    assert session.waiting == {}


def test_an_error_reply_is_recorded_as_a_failure_not_raised() -> None:
    error = {"op": "error", "code": "not_member", "message": "no"}
    session, records, _conn = _session(lambda f: [{**error, "ref": f["ref"]}])
    assert session.request({"op": "group_send"}, "SEND", "group") is None
    ((_kind, _name, _elapsed, failure),) = records
    assert isinstance(failure, Reply)
    assert "not_member" in str(failure)
    session.waiting["direct"] = ("", "x", time.perf_counter())
    session.conn.send({"op": "x", "ref": "direct"})  # type: ignore[union-attr]
    with pytest.raises(Reply):
        session.wait_reply("direct")


def test_a_close_fails_every_waiting_request() -> None:
    session, records, conn = _session(lambda f: ["close"])
    assert session.request({"op": "presence_subscribe", "users": []}, "PRESENCE", "s") is None
    assert conn.closed
    assert session.conn is None
    assert session.counters["closed_4009"] == 1
    assert session.counters["disconnects"] == 1
    ((kind, _name, _elapsed, error),) = records
    assert kind == "PRESENCE"
    assert isinstance(error, Closed)


def test_live_messages_give_latency_and_sequence_accounting() -> None:
    session, records, _conn = _session(lambda f: [])
    sent = session.clock.now_ms() - 40
    message = {"op": "message", "conversation_id": "dm:a:b", "kind": "dm"}
    session.handle({**message, "seq": 1, "from": "lt-u1", "body": f"{sent:.1f}|x"})
    session.handle({**message, "seq": 1, "from": "lt-u1", "body": f"{sent:.1f}|x"})
    session.handle({**message, "seq": 2, "from": "lt-u0", "body": f"{sent:.1f}|x"})  # own echo
    ((kind, name, latency, error),) = records
    assert (kind, name, error) == ("DELIVER", "dm", None)
    assert 39.9 <= latency < 1000  # the body's stamp is rounded to a tenth of a millisecond
    assert session.counters["duplicated"] == 1
    assert session.tracker.cursors() == {"dm:a:b": 2}


def test_backoff_doubles_up_to_its_cap() -> None:
    assert 0.1 <= backoff_s(0) <= 0.3
    assert 2.5 <= backoff_s(10) <= 7.5


def test_opsctl_sets_only_the_variables_the_locustfile_reads(tmp_path: Path) -> None:
    profile = load_profile("smoke")
    target = Target(("ws://127.0.0.1:1/ws",), tmp_path / "secret", "iss", "aud", 1, "test")
    options = RunOptions(profile=profile, profile_file=profile_path("smoke"), target=target)
    local = {k for k in _locust_env(options, tmp_path, "lt1") if k.startswith("LOADTEST_")}
    manifests = build_manifests(
        run="lt-x",
        profile_text="",
        target_urls=["ws://x/ws"],
        image="r/im/loadtest:1",
        sizing=size_run(profile, workers=2),
        shape=RunShape.of(profile),
    )
    jobs = {
        item["name"]
        for manifest in manifests
        if manifest["kind"] == "Job"
        for item in manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert local <= set(ENV_VARS)
    assert jobs <= set(ENV_VARS)
    config = RunConfig.from_env(_locust_env(options, tmp_path, "lt1"))
    assert config.targets == ("ws://127.0.0.1:1/ws",)
    assert (config.jwt_issuer, config.jwt_audience, config.run_id) == ("iss", "aud", "lt1")
    assert config.duration_s is None
    assert config.sending_s == profile.duration_s


def test_an_announced_gap_moves_the_cursor_and_a_late_fill_is_not_counted_twice() -> None:
    session, _records, _conn = _session(lambda f: [])
    message = {"op": "message", "conversation_id": "g:1", "kind": "group", "from": "lt-u9"}
    session.handle({**message, "seq": 1, "body": "x"})
    session.handle({"op": "gap", "conversation_id": "g:1", "from": 2, "to": 4})
    session.handle({**message, "seq": 5, "body": "x"})
    assert session.tracker.cursors() == {"g:1": 5}
    assert session.counters["gap_seqs"] == 3
    assert session.counters["out_of_order"] == 0
    # A message the old writer did persist inside the range arrives late: delivered once.
    session.handle({**message, "seq": 3, "body": "x"})
    session.handle({**message, "seq": 3, "body": "x"})
    assert session.counters["gap_filled"] == 1
    assert session.counters["duplicated"] == 1
    assert session.counters["delivered_live"] == 3


def test_sync_batch_gaps_cover_holes_and_are_not_lost_in_the_final_sync() -> None:
    session, _records, _conn = _session(lambda f: [])
    session.in_final_sync = True
    batch = {"op": "sync_batch", "conversation_id": "g:2", "gaps": [[2, 3]]}
    session.handle({**batch, "messages": [{"seq": 1}, {"seq": 4}]})
    assert session.tracker.cursors() == {"g:2": 4}
    assert session.counters["lost"] == 2  # seqs 1 and 4: missed live, found by the final sync
    assert session.counters["gap_seqs"] == 2
