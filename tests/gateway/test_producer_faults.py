"""A Kafka partition without a leader for a while, injected into the real local stack: a second
broker joins the stack's KRaft cluster and leads one of two partitions of a test topic, and a
gateway of the stack produces to that topic while the broker is frozen (SIGSTOP: the
controller fences it, its partition has no leader) and thawed.

Before gateway/producer.py, every send to that partition was refused for good after the thaw
(aiokafka's idempotent producer met OutOfOrderSequenceNumber), while /readyz stayed 200, and
the sends that timed out were answered ``unavailable`` although the broker may still have
written them (docs/protocol.md 5.2, 9.5)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2
from websockets.asyncio.client import ClientConnection, connect

from gateway.protocol import dm_conversation
from opsctl.local import LocalStack
from opsctl.local._extra_broker import STACK_BROKER_ID, ExtraBroker
from tests.gateway.conftest import Im
from tests.gateway.support import extra_gateway
from tests.support import wait_for

pytestmark = pytest.mark.integration

# Longer than the controller's broker session timeout (9 s) plus the producer's request
# timeout (10 s): the frozen broker is fenced and the batches queued for it expire.
FREEZE_S = 22.0
# When nothing succeeds, the waiting sends make the producer "failing" after its FAILING_S
# (10 s); the freeze lasts long enough to see that after any replacement's backoff too.
FREEZE_ALL_FAILING_S = 35.0
REPLY_S = 40.0


@contextlib.contextmanager
def extra_broker(stack: LocalStack, work_dir: Path) -> Iterator[ExtraBroker]:
    broker = ExtraBroker(stack, work_dir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def _create_topic(bootstrap: str, topic: str, extra_broker_id: int) -> None:
    """Partition 0 on the stack's broker, partition 1 on the extra one (retried until the
    extra broker has registered)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + 90
        while True:
            # Errors come back per topic, not raised (INVALID_REPLICA_ASSIGNMENT until the
            # extra broker has registered).
            placement = {0: [STACK_BROKER_ID], 1: [extra_broker_id]}
            response = await admin.create_topics(
                [NewTopic(topic, -1, -1, replica_assignments=placement)]
            )
            errors = [error for _, error, *_ in response.topic_errors if error != 0]
            if not errors:
                return
            assert time.monotonic() < deadline, f"topic {topic} not created: {response}"
            await asyncio.sleep(1)
    finally:
        await admin.close()


async def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


def _recipients(sender: str, prefix: str) -> tuple[str, str]:
    """Two recipients whose conversation with ``sender`` falls on partition 0 and 1 of a
    2-partition topic (the gateway keys records by conversation id, murmur2 like Java's)."""
    found: dict[int, str] = {}
    for i in itertools.count():
        user = f"{prefix}-{i}"
        partition = (murmur2(dm_conversation(sender, user).encode()) & 0x7FFFFFFF) % 2
        found.setdefault(partition, user)
        if len(found) == 2:
            return found[0], found[1]
    raise AssertionError("unreachable")


class Sender:
    """One session of the test gateway that sends and collects the replies by ref."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.replies: dict[str, dict[str, Any]] = {}
        self.frames: dict[str, dict[str, Any]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame.get("op") in ("ack", "error") and frame.get("ref") in self.frames:
                self.replies[frame["ref"]] = frame

    async def send(self, to: str, client_msg_id: str | None = None) -> str:
        """Send (or resend, with the same client_msg_id) a message to ``to``; returns its ref."""
        cmid = client_msg_id or uuid.uuid4().hex
        ref = f"{cmid}-{len(self.frames)}"
        frame = {"op": "send", "to": to, "client_msg_id": cmid, "body": "x", "ref": ref}
        self.frames[ref] = frame
        await self.ws.send(json.dumps(frame))
        return ref

    async def reply(self, ref: str, timeout: float = REPLY_S) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while ref not in self.replies:
                await asyncio.sleep(0.05)
        return self.replies[ref]

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


async def _kafka_client_msg_ids(bootstrap: str, topic: str) -> set[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (0, 1)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: set[str] = set()
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                found.update(json.loads(r.value)["cmid"] for r in records if r.value)
        return found
    finally:
        await consumer.stop()


def _replacements(im: Im, http: str, reason: str) -> float:
    key = f'im_gateway_kafka_producer_replacements_total{{reason="{reason}"}}'
    return im.metrics(http)[key]


def _readyz(http: str) -> tuple[int, str]:
    response = httpx.get(f"{http}/readyz", timeout=5)
    return response.status_code, response.text


def test_a_partition_without_a_leader_for_a_while(im: Im, tmp_path: Path) -> None:
    stack = im.stack
    bootstrap = stack.info.kafka_bootstrap
    topic = f"test.leaderless.{im.suffix}"
    alice = im.uid("lead-a")
    on_p0, on_p1 = _recipients(alice, im.uid("lead-b"))
    settings = {"IMGW_KAFKA_TOPIC": topic, "IMGW_KAFKA_PARTITIONS": "2"}

    with extra_broker(stack, tmp_path / "extra-broker") as broker:
        asyncio.run(_create_topic(bootstrap, topic, broker.node_id))
        try:
            with extra_gateway(stack, im.uid("gw-lead"), settings, tmp_path) as (ws_url, http):
                acked = asyncio.run(_scenario(im, ws_url, http, broker, alice, on_p0, on_p1))
            # Every acknowledged send is in Kafka (the dispatcher would key it by message id).
            written = asyncio.run(_kafka_client_msg_ids(bootstrap, topic))
            assert acked <= written, f"acked but not in Kafka: {sorted(acked - written)[:5]}"
        finally:
            asyncio.run(_delete_topic(bootstrap, topic))


class Scenario:
    """The three phases, on one session of the test gateway."""

    def __init__(self, s: Sender, http: str, broker: ExtraBroker) -> None:
        self.s, self.http, self.broker = s, http, broker
        self.acked: set[str] = set()

    async def acked_within(self, to: str, timeout: float, cmid: str | None = None) -> None:
        """Send (again, with the same client_msg_id) until acked."""
        deadline = time.monotonic() + timeout
        cmid = cmid or uuid.uuid4().hex
        while True:
            reply = await self.s.reply(await self.s.send(to, cmid))
            if reply["op"] == "ack":
                self.acked.add(cmid)
                return
            assert time.monotonic() < deadline, f"no ack for a send to {to} in {timeout} s: {reply}"
            await asyncio.sleep(0.5)

    async def frozen(
        self, seconds: float, *targets: str
    ) -> tuple[list[str], list[tuple[int, str]]]:
        """Freeze the extra broker for ``seconds`` while sending to each target every 0.5 s;
        returns the refs and what /readyz said meanwhile."""
        self.broker.freeze()
        refs, readiness = [], []
        try:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                refs += [await self.s.send(to) for to in targets]
                readiness.append(_readyz(self.http))
                await asyncio.sleep(0.5)
        finally:
            self.broker.thaw()
        return refs, readiness

    async def partial(self, on_p0: str, on_p1: str) -> list[dict[str, Any]]:
        """Partition 1 without a leader, partition 0 fine: the pod stays ready, partition 0's
        sends are acked, partition 1's are answered outcome_unknown (not "not written")."""
        refs, readiness = await self.frozen(FREEZE_S, on_p0, on_p1)
        assert all(code == 200 for code, _ in readiness), [r for r in readiness if r[0] != 200]
        replies = {ref: await self.s.reply(ref) for ref in refs}
        to_p0 = [r for ref, r in replies.items() if self.s.frames[ref]["to"] == on_p0]
        to_p1 = [r for ref, r in replies.items() if self.s.frames[ref]["to"] == on_p1]
        assert all(r["op"] == "ack" for r in to_p0), [r for r in to_p0 if r["op"] != "ack"]
        self.acked.update(self.s.frames[r["ref"]]["client_msg_id"] for r in to_p0)
        unknown = [r for r in to_p1 if r.get("code") == "outcome_unknown"]
        assert unknown, f"no send to the leaderless partition got outcome_unknown: {to_p1[:3]}"
        return unknown

    async def all_failing(self, on_p1: str) -> None:
        """Only partition 1 written and no send succeeds: the pod leaves the rotation (its
        producer is replaced) until one does; every send is then acked, resent if need be."""
        refs, readiness = await self.frozen(FREEZE_ALL_FAILING_S, on_p1)
        unready = [text for code, text in readiness if code == 503]
        assert any("kafka sends failing" in t or "being replaced" in t for t in unready), readiness
        for ref in refs:
            reply = await self.s.reply(ref, timeout=60)
            cmid = self.s.frames[ref]["client_msg_id"]
            if reply["op"] == "ack":
                self.acked.add(cmid)
            else:
                await self.acked_within(on_p1, 90, cmid)


async def _scenario(im: Im, ws_url: str, http: str, broker: ExtraBroker, *users: str) -> set[str]:
    alice, on_p0, on_p1 = users
    ws = await connect(ws_url, additional_headers={"Authorization": f"Bearer {im.token(alice)}"})
    await ws.send(json.dumps({"op": "hello", "device_id": "d1"}))
    while json.loads(await ws.recv())["op"] != "welcome":
        pass
    s = Sender(ws)
    run = Scenario(s, http, broker)
    try:
        for to in (on_p0, on_p1):
            await run.acked_within(to, 30)
        unknown = await run.partial(on_p0, on_p1)
        # Thawed: partition 1 works again without a restart. The producer met the broker's
        # OutOfOrderSequenceNumber and was replaced; the sends of unknown outcome are resent.
        for reply in unknown:
            await run.acked_within(on_p1, 60, s.frames[reply["ref"]]["client_msg_id"])
        await run.acked_within(on_p1, 60)
        assert _replacements(im, http, "producer_state") >= 1
        wait_for("gateway ready after the thaw", lambda: _readyz(http)[0] == 200, timeout=60)

        failing_before = _replacements(im, http, "failing")
        await run.all_failing(on_p1)
        assert _replacements(im, http, "failing") > failing_before
        wait_for("gateway ready again", lambda: _readyz(http)[0] == 200, timeout=60)
        return run.acked
    finally:
        broker.thaw()
        await s.close()
