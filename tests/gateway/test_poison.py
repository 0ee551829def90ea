"""Poison records on the real local stack: records that always fail are injected into the real
messages topic while two conversations carry normal traffic. Normal messages keep being
delivered, every poison record lands in the DLQ with its reason, `opsctl dlq list` shows them,
a fixed record replays into the conversation, and a record still poison is reported as such."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.conftest import Im
from tests.gateway.protocol_client import ProtocolClient, dm
from tests.gateway.support import injected_record, produce
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration


async def _load(pairs: list[tuple[ProtocolClient, str]], stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        for client, peer in pairs:
            await client.send(f"{client.user}#{i}", to=peer)
        i += 1
        await asyncio.sleep(0.05)


def _dlq(opsctl: OpsctlRunner, state_dir: Path) -> list[dict[str, Any]]:
    result = opsctl("dlq", "list", "--stack", "local", "--state-dir", str(state_dir), "-o", "json")
    assert result.exit_code == 0, result.stderr
    records: list[dict[str, Any]] = json.loads(result.stdout)["records"]
    return records


async def _delivered_exactly_once(
    sender: ProtocolClient, receiver: ProtocolClient, conv: str
) -> None:
    """Every message the sender got an ack for is at the receiver once, in send order."""
    await sender.wait_until(lambda: not sender.unacked, 30, "every send acked")
    expected = {ack["message_id"] for ack in sender.acks.values()}

    def arrived() -> bool:
        got = {m["message_id"] for k, m in receiver.messages.items() if k[0] == conv}
        return got >= expected

    await receiver.wait_until(arrived, 60, f"every acked message of {conv}")
    seqs = sorted(seq for cv, seq in receiver.messages if cv == conv)
    ids = [receiver.messages[(conv, s)]["message_id"] for s in seqs]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    bodies = [receiver.messages[(conv, s)]["body"] for s in seqs]
    assert bodies == sorted(bodies, key=lambda body: int(body.split("#")[1]))
    assert receiver.duplicates_on_one_connection() == []


def _no_unannounced_hole(receiver: ProtocolClient, conv: str) -> None:
    """The seq a poison record got never became a message: it is announced as in doubt, so no
    client waits for it (every seq up to the last is a message or inside an announced range)."""
    seqs = {seq for cv, seq in receiver.messages if cv == conv}
    announced = {s for low, high in receiver.announced_gaps(conv) for s in range(low, high + 1)}
    assert set(range(1, max(seqs) + 1)) <= seqs | announced
    assert announced - seqs, "the poison record's seq was not announced as in doubt"


def _check_dead_letters(
    listed: list[dict[str, Any]], expected: list[tuple[dict[str, Any], str, str]], topic: str
) -> dict[str, str]:
    """Each poison record is in the DLQ with reason, stage and error; mid -> DLQ position."""
    by_mid = {json.loads(r["value"])["mid"]: r for r in listed}
    positions: dict[str, str] = {}
    for record, stage, words in expected:
        entry = by_mid[record["mid"]]
        assert entry["reason"] == "poison"
        assert entry["stage"] == stage
        assert entry["attempts"] >= 5
        assert words in entry["error"]
        assert entry["source"].startswith(f"{topic}/")
        positions[record["mid"]] = entry["position"]
    assert len(by_mid) == len(expected)
    return positions


def _replay(opsctl: OpsctlRunner, state_dir: Path, *args: str) -> tuple[int, str, list[Any]]:
    result = opsctl("dlq", "replay", *args, "--state-dir", str(state_dir), "-o", "json")
    replayed = json.loads(result.stdout)["replayed"] if result.stdout else []
    return result.exit_code, result.stderr, replayed


async def _check_replays(
    opsctl: OpsctlRunner,
    state_dir: Path,
    *,
    tmp_path: Path,
    b: ProtocolClient,
    huge_ts: dict[str, Any],
    bogus: dict[str, Any],
    positions: dict[str, str],
) -> None:
    """A fixed record replays into its conversation; an unfixed one is reported as poison."""
    # Replay after fixing: the ts record with a sane ts goes into the conversation.
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({**huge_ts, "ts": int(time.time() * 1000)}))
    code, err, replayed = await asyncio.to_thread(
        _replay,
        opsctl,
        state_dir,
        "--offset",
        positions[huge_ts["mid"]],
        "--value-file",
        str(fixed),
        "--wait",
        "60",
    )
    assert code == 0, err
    assert [o["status"] for o in replayed] == ["processed"]

    def replayed_arrived() -> bool:
        return any(m["message_id"] == huge_ts["mid"] for m in b.messages.values())

    await b.wait_until(replayed_arrived, 30, "the replayed message at bob")
    # Replay without a fix: the record is poison again, and replay says so (exit 1).
    position = positions[bogus["mid"]]
    code, err, replayed = await asyncio.to_thread(
        _replay, opsctl, state_dir, "--offset", position, "--wait", "90"
    )
    assert code == 1, err
    assert [o["status"] for o in replayed] == ["poison"]
    assert "KeyError" in replayed[0]["error"]
    assert "still poison" in err
    relisted = await asyncio.to_thread(_dlq, opsctl, state_dir)
    assert any((r["replay_of"] or "").endswith(f"/{position}") for r in relisted)


def test_poison_records_go_to_the_dlq_while_traffic_flows_and_can_be_replayed(
    im: Im, opsctl: OpsctlRunner, tmp_path: Path
) -> None:
    info = im.stack.info
    state_dir = info.state_dir
    alice, bob, carol, dave = (im.uid(n) for n in ("alice", "bob", "carol", "dave"))
    ab, cd = dm(alice, bob), dm(carol, dave)
    before = im.metrics(info.dispatcher_url)
    known = {r["position"] for r in _dlq(opsctl, state_dir)}
    # Three kinds of poison (issue 15): a group record whose conversation is not g:<gid> (the
    # recipients lookup fails), a ts beyond bigint (Cassandra refuses it) in a live
    # conversation, a lone surrogate that reached Kafka (not encodable as UTF-8).
    region = info.regions[0].name
    bogus = injected_record(region, f"bogus-{im.suffix}", alice, gid=f"grp-{im.suffix}")
    huge_ts = injected_record(region, ab, alice, to=bob, ts=2**70, body="late but real")
    lone = injected_record(region, cd, carol, to=dave, body="poison")
    lone_value = json.dumps(lone).replace('"body": "poison"', '"body": "x\\ud83d"').encode()
    assert b"\\ud83d" in lone_value
    poison = [
        (bogus["conv"], json.dumps(bogus).encode()),
        (ab, json.dumps(huge_ts).encode()),
        (cd, lone_value),
    ]

    async def scenario() -> None:
        a, b = im.client(alice, gateway=0), im.client(bob, gateway=1)
        c, d = im.client(carol, gateway=1), im.client(dave, gateway=0)
        for client in (a, b, c, d):
            await client.connect()
        stop = asyncio.Event()
        load = asyncio.create_task(_load([(a, bob), (c, dave)], stop))
        await asyncio.sleep(1.0)
        await produce(info.kafka_bootstrap, info.kafka_topic, poison)
        await asyncio.sleep(2.0)
        stop.set()
        await load
        await _delivered_exactly_once(a, b, ab)
        await _delivered_exactly_once(c, d, cd)
        _no_unannounced_hole(b, ab)
        _no_unannounced_hole(d, cd)

        listed = await asyncio.to_thread(_dlq, opsctl, state_dir)
        positions = _check_dead_letters(
            [r for r in listed if r["position"] not in known],
            [(bogus, "recipients", "KeyError"), (huge_ts, "persist", ""), (lone, "persist", "")],
            info.kafka_topic,
        )
        assert "surrogates not allowed" in next(
            r["error"] for r in listed if r["position"] == positions[lone["mid"]]
        )

        await _check_replays(
            opsctl,
            state_dir,
            tmp_path=tmp_path,
            b=b,
            huge_ts=huge_ts,
            bogus=bogus,
            positions=positions,
        )

    im.run(scenario)
    after = im.metrics(info.dispatcher_url)
    poisoned = 'im_dispatcher_dead_lettered_total{reason="poison"}'
    assert after[poisoned] - before[poisoned] == 4  # three, and the one replayed unfixed
    assert after["im_dispatcher_commits_total"] > before["im_dispatcher_commits_total"]


def test_an_outage_is_retried_and_dead_letters_nothing(im: Im, opsctl: OpsctlRunner) -> None:
    """Redis down for longer than a poison record's whole retry budget: every record fails at
    the cache step, but the probe fails too, so the dispatcher keeps retrying and dead-letters
    nothing; once Redis is back every record is delivered."""
    stack, info = im.stack, im.stack.info
    alice, bob = im.uid("alice"), im.uid("bob")
    conv = dm(alice, bob)
    region = info.regions[0].name
    records = [
        injected_record(region, conv, alice, to=bob, body=f"through the outage #{i}")
        for i in range(5)
    ]
    known = {r["position"] for r in _dlq(opsctl, info.state_dir)}
    before = im.metrics(info.dispatcher_url)
    stack.stop("redis")
    try:
        values = [(conv, json.dumps(r).encode()) for r in records]
        asyncio.run(produce(info.kafka_bootstrap, info.kafka_topic, values))
        time.sleep(15)  # several times what MAX_RECORD_ATTEMPTS of a poison record take
        during = im.metrics(info.dispatcher_url)
    finally:
        stack.up()
    failed = 'im_dispatcher_batch_failures_total{stage="cache"}'
    assert during[failed] > before[failed]  # the outage was hit, and retried

    async def scenario() -> None:
        b = im.client(bob, gateway=1)
        await b.connect()

        def arrived() -> bool:
            return {m["message_id"] for m in b.messages.values()} >= {r["mid"] for r in records}

        await b.wait_until(arrived, 60, "every record after the outage")

    im.run(scenario)
    after = im.metrics(info.dispatcher_url)
    poisoned = 'im_dispatcher_dead_lettered_total{reason="poison"}'
    assert after[poisoned] == before[poisoned]
    new = [r for r in _dlq(opsctl, info.state_dir) if r["position"] not in known]
    assert new == []
