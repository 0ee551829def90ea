"""Helpers shared by the gateway's integration tests."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process a test started, frozen (SIGSTOP) or not: SIGCONT and SIGTERM, SIGKILL
    after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def assert_increased(
    before: Mapping[str, float], after: Mapping[str, float], names: Iterable[str]
) -> None:
    """Each series in ``names`` is higher in ``after`` than in ``before`` (absent: 0)."""
    for name in names:
        assert after[name] > before.get(name, 0), f"{name}: {before.get(name, 0)} -> {after[name]}"


def convs_homed(regions: Sequence[str], home: str, count: int, tag: str) -> list[str]:
    """``count`` DM conversations, on distinct shards, whose first home (the map at epoch 0
    over ``regions``) is ``home``; ``tag`` keeps them apart from other tests' conversations."""
    from gateway.homes import shard_of
    from gateway.protocol import dm_conversation
    from gateway.shardmap import ShardMap

    fresh = ShardMap(0, tuple(regions))
    out: list[str] = []
    shards: set[int] = set()
    i = 0
    while len(out) < count:
        conv = dm_conversation(f"a{i}-{tag}", f"b{i}-{tag}")
        shard = shard_of(conv)
        if fresh.entry(shard).home == home and shard not in shards:
            out.append(conv)
            shards.add(shard)
        i += 1
    return out


def injected_record(
    region: str,
    conv: str,
    sender: str,
    *,
    to: str | None = None,
    gid: str | None = None,
    body: str = "injected",
    ts: int | None = None,
    device: str = "injector",
) -> dict[str, Any]:
    """A messages-topic record exactly as a gateway in ``region`` writes it (the gateway's own
    encoder and message id), as a dict so a test can read or corrupt its fields."""
    from gateway.protocol import message_id
    from gateway.records import encode_record

    cmid = uuid.uuid4().hex
    value = encode_record(
        message_id=message_id(sender, cmid),
        conversation_id=conv,
        sender=sender,
        device=device,
        client_msg_id=cmid,
        body=body,
        accepted_at=int(time.time() * 1000) if ts is None else ts,
        node="test",
        epoch=0,
        region=region,
        to=to,
        group_id=gid,
    )
    record: dict[str, Any] = json.loads(value)
    return record


async def produce(bootstrap: str, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
    """Write (key, value) records to a real topic, idempotently, each acknowledged by all
    in-sync replicas."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value=value, key=key.encode())
    finally:
        await producer.stop()
