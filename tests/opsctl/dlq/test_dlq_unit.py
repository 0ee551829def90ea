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
