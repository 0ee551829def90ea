"""opsctl dlq without a Kafka: choosing records, what a record shows, and bad input (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsctl.dlq import DlqRecord, select
from opsctl.errors import UserInputError
from tests.support import OpsctlRunner


def record(partition: int, offset: int, **headers: str) -> DlqRecord:
    return DlqRecord(partition, offset, 1764170000000, b"dm:a:b", b'{"v":1}', headers)


@pytest.mark.unit
def test_select_by_position_and_by_bare_offset_on_one_partition() -> None:
    records = [record(0, 3), record(0, 4)]
    assert select(records, ["0@4", "3"]) == [records[1], records[0]]
    two = [record(0, 1), record(1, 1)]
    assert select(two, ["1@1"]) == [two[1]]
    with pytest.raises(UserInputError, match="--offset 1: no such record"):
        select(two, ["1"])  # ambiguous with two partitions: a position is needed
    with pytest.raises(UserInputError, match="0@9"):
        select(records, ["0@9"])


@pytest.mark.unit
def test_a_record_shows_the_dispatcher_headers() -> None:
    shown = record(
        2,
        7,
        reason="poison",
        stage="persist",
        attempts="5",
        error="TypeError('x')",
        source="im.messages/1@40",
        **{"replay-of": "im.messages.dlq/0@3"},
    ).as_dict()
    assert shown["position"] == "2@7"
    assert (shown["reason"], shown["stage"], shown["attempts"]) == ("poison", "persist", 5)
    assert shown["source"] == "im.messages/1@40"
    assert shown["replay_of"] == "im.messages.dlq/0@3"
    assert (shown["key"], shown["value"]) == ("dm:a:b", '{"v":1}')
    assert record(0, 0).as_dict()["reason"] is None


@pytest.mark.unit
def test_bad_input_exits_2_before_contacting_kafka(opsctl: OpsctlRunner, tmp_path: Path) -> None:
    empty = tmp_path / "no-stack"
    empty.mkdir()
    result = opsctl("dlq", "list", "--state-dir", str(empty))
    assert result.exit_code == 2
    assert "no local stack is recorded" in result.stderr
    result = opsctl("dlq", "list", "--stack", "staging")
    assert result.exit_code == 2
    assert "--bootstrap" in result.stderr
    result = opsctl("dlq", "replay", "--bootstrap", "127.0.0.1:1")
    assert result.exit_code == 2
    assert "--offset" in result.stderr
    fixed = tmp_path / "fixed.json"
    fixed.write_text("{}")
    result = opsctl(
        "dlq", "replay", "--all", "--value-file", str(fixed), "--bootstrap", "127.0.0.1:1"
    )
    assert result.exit_code == 2
    assert result.stdout == ""


@pytest.mark.integration  # a connection to a closed local port
def test_an_unreachable_kafka_is_a_failed_check(opsctl: OpsctlRunner) -> None:
    result = opsctl("dlq", "list", "--bootstrap", "127.0.0.1:1", "-o", "json")
    assert result.exit_code == 1
    assert "127.0.0.1:1" in result.stderr
    assert result.stdout == ""


@pytest.fixture
def fake_dlq(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The Kafka calls replaced: two DLQ records; replay outcomes chosen per test."""
    import opsctl.dlq
    from opsctl.dlq import Replayed, ReplayOutcome

    calls: list[tuple[str, ...]] = []
    records = [
        record(0, 3, reason="poison", stage="recipients", attempts="5", error="KeyError('x')"),
        record(0, 4, reason="undecodable", stage="decode", error="bad json"),
    ]
    status = {"0@3": "poison", "0@4": "pending"}

    def fake_replay(target: object, chosen: list[DlqRecord], **kwargs: object) -> ReplayOutcome:
        calls.append(tuple(r.position for r in chosen))
        done = [
            Replayed(f"im.messages.dlq/{r.position}", "im.messages", 1, 40 + n, status[r.position])
            for n, r in enumerate(chosen)
        ]
        return ReplayOutcome(done, waited=True)

    monkeypatch.setattr(opsctl.dlq, "list_records", lambda target: records)
    monkeypatch.setattr(opsctl.dlq, "replay", fake_replay)
    return calls


@pytest.mark.unit
def test_list_prints_a_table_on_stdout(opsctl: OpsctlRunner, fake_dlq: object) -> None:
    result = opsctl("dlq", "list", "--bootstrap", "k:9092")
    assert result.exit_code == 0
    assert "0@3" in result.stdout
    assert "0@4" in result.stdout
    assert "poison" in result.stdout
    assert result.stderr == ""


@pytest.mark.unit
def test_replay_exit_codes_follow_the_outcome(
    opsctl: OpsctlRunner, fake_dlq: list[tuple[str, ...]]
) -> None:
    import json

    poisoned = opsctl(
        "dlq", "replay", "--offset", "3", "--wait", "5", "-o", "json", "--bootstrap", "k:1"
    )
    assert poisoned.exit_code == 1
    assert json.loads(poisoned.stdout)["replayed"][0]["status"] == "poison"
    assert "still poison" in poisoned.stderr
    pending = opsctl("dlq", "replay", "--offset", "0@4", "--wait", "5", "--bootstrap", "k:1")
    assert pending.exit_code == 3
    assert "not yet committed" in pending.stderr
    assert fake_dlq == [("0@3",), ("0@4",)]
