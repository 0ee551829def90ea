"""Pure pieces of the delivery path: recent-cache sync selection, record decoding, migrations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.delivery import from_recent_cache, holes
from gateway.dispatcher import BadRecord, parse_record
from gateway.migrate import (
    MIGRATIONS_DIR,
    MigrationInputError,
    cql_statements,
    discover_migrations,
    load_topic_plan,
    replication_of,
)

pytestmark = pytest.mark.unit


def entries(*seqs: int) -> list[str]:
    return [f'{s}|{{"seq":{s}}}' for s in seqs]


def test_cache_serves_a_contiguous_range_after_the_cursor() -> None:
    got = from_recent_cache(entries(3, 4, 5, 6), cursor=4, limit=10)
    assert [s for s, _ in got or []] == [5, 6]
    first_two = [(3, '{"seq":3}'), (4, '{"seq":4}')]
    assert from_recent_cache(entries(3, 4, 5, 6), cursor=2, limit=2) == first_two


def test_cache_refuses_when_it_cannot_prove_completeness() -> None:
    assert from_recent_cache([], 0, 10) is None
    assert from_recent_cache(entries(5, 6), cursor=2, limit=10) is None  # starts after cursor+1
    assert from_recent_cache(entries(1, 2, 4), cursor=0, limit=10) is None  # hole at 3


def test_cache_tolerates_replayed_entries_and_an_up_to_date_cursor() -> None:
    got = from_recent_cache(entries(1, 2, 2, 3, 3), cursor=1, limit=10)
    assert [s for s, _ in got or []] == [2, 3]
    assert from_recent_cache(entries(1, 2, 3), cursor=3, limit=10) == []


def record(**overrides: object) -> bytes:
    base: dict[str, object] = {
        "v": 1,
        "mid": "m1",
        "conv": "dm:alice:bob",
        "kind": "dm",
        "from": "alice",
        "dev": "phone",
        "cmid": "c1",
        "body": "hi",
        "ts": 1000,
        "to": "bob",
        "gw": "gw-1",
    }
    base.update(overrides)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def test_parse_record() -> None:
    accepted = parse_record(record())
    got = (accepted.conversation_id, accepted.to, accepted.accepted_at)
    assert got == ("dm:alice:bob", "bob", 1000)
    group = parse_record(record(kind="group", conv="g:x", gid="x", to=None))
    assert group.group_id == "x"


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        record(v=2),
        record(kind="broadcast"),
        record(mid=None),
        record(ts="soon"),
        record(conv="g:x"),  # dm kind with a group conversation
        record(kind="group", conv="g:x", gid=None),
    ],
)
def test_bad_records_go_to_the_dead_letter_topic(raw: bytes) -> None:
    with pytest.raises(BadRecord):
        parse_record(raw)


def test_shipped_topics_file_and_min_insync_cap() -> None:
    text = (MIGRATIONS_DIR / "kafka" / "topics.yaml").read_text()
    local = load_topic_plan(text, source="t", topic="im.m", partitions=6, replication_factor=1)
    assert [p.name for p in local] == ["im.m", "im.m.dlq", "im.deliveries"]
    assert local[0].partitions == 6
    assert local[0].configs["min.insync.replicas"] == "1"
    assert local[0].configs["cleanup.policy"] == "delete"
    prod = load_topic_plan(text, source="t", topic="im.m", partitions=48, replication_factor=3)
    assert prod[0].configs["min.insync.replicas"] == "2"
    assert prod[0].replication_factor == 3


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("version: 2\ntopics: []", "version: 1"),
        ("version: 1\ntopics: []", "non-empty"),
        ("version: 1\ntopics: [{name: 'bad name'}]", "not a valid topic name"),
        ("version: 1\ntopics: [{name: a, partitions: 3}]", "unknown keys"),
        ("version: 1\ntopics: [{name: a, configs: {x: [1]}}]", "configs.x"),
        ("version: 1\ntopics: [{name: a}, {name: a}]", "duplicate"),
        ("version: 1\ntopics: [{name: a, configs: {min.insync.replicas: two}}]", "integer"),
        (":\n- [", "not valid YAML"),
    ],
)
def test_bad_topics_files(text: str, fragment: str) -> None:
    with pytest.raises(MigrationInputError, match=fragment):
        load_topic_plan(text, source="t", topic="x", partitions=1, replication_factor=1)


def test_cql_statement_splitting() -> None:
    text = "-- comment; with semicolon\nCREATE TABLE a (x int PRIMARY KEY);\n\nSELECT 1 -- c\n;"
    assert cql_statements(text) == ["CREATE TABLE a (x int PRIMARY KEY)", "SELECT 1"]


def test_shipped_cql_migrations_are_ordered() -> None:
    found = discover_migrations(MIGRATIONS_DIR / "cql")
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert any("messages" in stmt for stmt in found[0].statements)


def test_bad_migration_directories(tmp_path: Path) -> None:
    (tmp_path / "0001_a.cql").write_text("CREATE TABLE a (x int PRIMARY KEY);")
    (tmp_path / "0003_c.cql").write_text("CREATE TABLE c (x int PRIMARY KEY);")
    with pytest.raises(MigrationInputError, match="without gaps"):
        discover_migrations(tmp_path)
    (tmp_path / "0003_c.cql").unlink()
    (tmp_path / "2_b.cql").write_text("SELECT 1;")
    with pytest.raises(MigrationInputError, match="0001_description"):
        discover_migrations(tmp_path)
    (tmp_path / "2_b.cql").unlink()
    (tmp_path / "0002_ks.cql").write_text("CREATE KEYSPACE x WITH replication = {};")
    with pytest.raises(MigrationInputError, match="keyspaces"):
        discover_migrations(tmp_path)


def test_replication_strategy_from_env() -> None:
    assert replication_of(1, "") == {"class": "SimpleStrategy", "replication_factor": "1"}
    assert replication_of(3, "dc1") == {"class": "NetworkTopologyStrategy", "dc1": "3"}


def test_migrate_sets_its_own_datacenter_and_keeps_the_other_regions() -> None:
    # The stack's keyspace Job replicates to every region; each region's migrate runs with its
    # own DC and must never drop the others (that would stop cross-region replication).
    stack_map = {
        "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
        "us-east": "3",
        "eu-central": "3",
    }
    assert replication_of(3, "eu-central", stack_map) == {
        "class": "NetworkTopologyStrategy",
        "us-east": "3",
        "eu-central": "3",
    }
    assert replication_of(2, "ap-east", stack_map) == {
        "class": "NetworkTopologyStrategy",
        "us-east": "3",
        "eu-central": "3",
        "ap-east": "2",
    }
    # A single-DC SimpleStrategy keyspace moves to NetworkTopologyStrategy for its DC only.
    simple = {"class": "SimpleStrategy", "replication_factor": "1"}
    assert replication_of(3, "dc1", simple) == {"class": "NetworkTopologyStrategy", "dc1": "3"}


def test_cache_refuses_a_range_that_starts_after_an_in_doubt_hole() -> None:
    # Seqs 6..8 in doubt: the cache holds 1..5 and 9, 10. A sync from 5 must go to Cassandra,
    # which reads seq_gaps and announces the range (protocol 5.6).
    assert from_recent_cache(entries(1, 2, 3, 4, 5, 9, 10), cursor=5, limit=10) is None
    assert holes(5, [9, 10])
    assert holes(0, [1, 3])
    assert not holes(4, [5, 6])
    assert not holes(4, [])
