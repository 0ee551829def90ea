"""Issue 15, partitions added under a backlog, against the local stack's real Kafka: migrate
never adds partitions on its own (exit 3, nothing changed, the safe procedure named); with
--increase-partitions it still refuses while a topic is written to or a consumer group has not
committed up to the end, and adds them once the topic is quiet and drained."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid

import pytest

from opsctl.paths import REPO_ROOT
from tests.gateway.conftest import Im

pytestmark = pytest.mark.integration

REFUSED = 3


def _migrate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.migrate", "--only", "kafka", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def _partitions(bootstrap: str, topic: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return len(described["partitions"])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, count: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(topic, value=b"{}", key=f"dm:a:b{i % 5}".encode())
    finally:
        await producer.stop()


async def _commit(bootstrap: str, group: str, topic: str, count: int, *, to_end: bool) -> None:
    """The group commits each of the ``count`` partitions of ``topic`` at its end, or at 0."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(count)]
        ends = await consumer.end_offsets(tps)
        offsets = {tp: OffsetAndMetadata(ends[tp] if to_end else 0, "") for tp in tps}
        consumer.assign(tps)
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def _envs(im: Im) -> tuple[str, str, dict[str, str]]:
    """A topic and dispatcher group of this test's own, and migrate's environment for them."""
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"im.partitions-test-{suffix}", f"im-dispatcher-partitions-{suffix}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IMGW_")},
        **im.stack.imgw_env(),
        "IMGW_NODE_ID": "migrate-partitions",
        "IMGW_KAFKA_TOPIC": topic,
        "IMGW_KAFKA_DELIVERIES_TOPIC": f"im.partitions-test-deliveries-{suffix}",
        "IMGW_KAFKA_CONSUMER_GROUP": group,
    }
    return topic, group, env


def _with(env: dict[str, str], partitions: int) -> dict[str, str]:
    return {**env, "IMGW_KAFKA_PARTITIONS": str(partitions)}


def test_migrate_refuses_to_add_partitions_unasked_under_a_backlog_or_while_written(
    im: Im,
) -> None:
    bootstrap = im.stack.info.kafka_bootstrap
    topic, group, env = _envs(im)
    created = _migrate(_with(env, 2))
    assert created.returncode == 0, created.stderr
    asyncio.run(_produce(bootstrap, topic, 20))  # a backlog nobody has consumed

    # Asked for more partitions by the environment alone: refused, nothing changed.
    plain = _migrate(_with(env, 3))
    assert plain.returncode == REFUSED, plain.stderr
    assert f"{topic} has 2, 3 configured" in plain.stderr
    assert "--increase-partitions" in plain.stderr
    assert "lag 0" in plain.stderr
    assert "docs/protocol.md section 9.4" in plain.stderr
    assert asyncio.run(_partitions(bootstrap, topic)) == 2

    # Asked explicitly while the dispatchers' group has not consumed the backlog: refused.
    behind = _migrate(_with(env, 3), "--increase-partitions")
    assert behind.returncode == REFUSED, behind.stderr
    assert "still behind" in behind.stderr
    assert f"{group} {topic}[" in behind.stderr
    assert asyncio.run(_partitions(bootstrap, topic)) == 2

    # Drained, but producers still writing: refused.
    asyncio.run(_commit(bootstrap, group, topic, 2, to_end=True))
    stop = threading.Event()

    def keep_writing() -> None:
        while not stop.is_set():
            asyncio.run(_produce(bootstrap, topic, 5))

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        written = _migrate(_with(env, 3), "--increase-partitions")
    finally:
        stop.set()
        writer.join(60)
    assert written.returncode == REFUSED, written.stderr
    assert "still written to" in written.stderr
    assert asyncio.run(_partitions(bootstrap, topic)) == 2


def test_migrate_adds_partitions_when_asked_on_a_quiet_drained_topic(im: Im) -> None:
    bootstrap = im.stack.info.kafka_bootstrap
    topic, group, env = _envs(im)
    created = _migrate(_with(env, 2))
    assert created.returncode == 0, created.stderr
    asyncio.run(_produce(bootstrap, topic, 20))
    # Every group reading the topic (the dispatchers' and another) has committed to the end.
    asyncio.run(_commit(bootstrap, group, topic, 2, to_end=True))
    asyncio.run(_commit(bootstrap, f"{group}-other", topic, 2, to_end=True))
    done = _migrate(_with(env, 3), "--increase-partitions")
    assert done.returncode == 0, done.stderr
    assert f"kafka: {topic} partitions 2 -> 3" in done.stderr
    assert asyncio.run(_partitions(bootstrap, topic)) == 3
    again = _migrate(_with(env, 3))  # as configured now: nothing to add, no flag needed
    assert again.returncode == 0, again.stderr

    # Any group behind on the topic, not only the dispatchers', is a refusal.
    asyncio.run(_produce(bootstrap, topic, 3))
    asyncio.run(_commit(bootstrap, group, topic, 3, to_end=True))
    asyncio.run(_commit(bootstrap, f"{group}-other", topic, 3, to_end=False))
    other = _migrate(_with(env, 4), "--increase-partitions")
    assert other.returncode == REFUSED, other.stderr
    assert f"{group}-other {topic}[" in other.stderr
    assert asyncio.run(_partitions(bootstrap, topic)) == 3
