"""The faults the drills inject into the local stack and restore, each through the stack's own
operations (LocalStack: kill, stop, start) or the real services' interfaces (Redis, Kafka)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from typing import Any

from opsctl.drill._model import Check, DrillContext

GATEWAY = "gw-1"
DISPATCHER = "dispatcher"
REDIS = "redis"
CASSANDRA = "cassandra"
KAFKA = "kafka"
PUBSUB_KILL_INTERVAL_S = 2.0
DLQ_WAIT_S = 60.0


# -- one component down, then started again ------------------------------------------------


def kill_gateway(ctx: DrillContext) -> None:
    ctx.state["gateway"] = GATEWAY
    ctx.stack.kill(GATEWAY)


def start_gateway(ctx: DrillContext) -> None:
    ctx.stack.start(GATEWAY)


def kill_dispatcher(ctx: DrillContext) -> None:
    ctx.state["dispatcher"] = DISPATCHER
    ctx.stack.kill(DISPATCHER)


def start_dispatcher(ctx: DrillContext) -> None:
    ctx.stack.start(DISPATCHER)


def stop_redis_and_wipe(ctx: DrillContext) -> None:
    """Redis stopped and its data (the AOF) deleted: it comes back empty."""
    ctx.stack.stop(REDIS)
    data = ctx.stack.layout.data(REDIS)
    for entry in data.iterdir() if data.is_dir() else ():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def start_redis(ctx: DrillContext) -> None:
    ctx.stack.start(REDIS)


def stop_cassandra(ctx: DrillContext) -> None:
    ctx.stack.stop(CASSANDRA)


def start_cassandra(ctx: DrillContext) -> None:
    ctx.stack.start(CASSANDRA)


def stop_kafka(ctx: DrillContext) -> None:
    ctx.stack.stop(KAFKA)


def start_kafka(ctx: DrillContext) -> None:
    ctx.stack.start(KAFKA)


# -- pub/sub disconnect ----------------------------------------------------------------------


def _redis(ctx: DrillContext) -> Any:
    import redis

    return redis.Redis.from_url(ctx.stack.info.redis_url, **ctx.stack.redis_kwargs())


def kill_pubsub_clients(ctx: DrillContext) -> None:
    """CLIENT KILL TYPE pubsub: every gateway's subscription connection is cut."""
    client = _redis(ctx)
    try:
        killed = int(client.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))
    finally:
        client.close()
    ctx.state["pubsub_killed"] = int(ctx.state.get("pubsub_killed", 0)) + killed


def pubsub_holding(ctx: DrillContext) -> None:
    """While held: cut the subscriptions again every couple of seconds (repeated reconnects)."""
    last = float(ctx.state.get("pubsub_last_kill", 0.0))
    if time.monotonic() - last >= PUBSUB_KILL_INTERVAL_S:
        kill_pubsub_clients(ctx)
        ctx.state["pubsub_last_kill"] = time.monotonic()


def nothing_to_restore(ctx: DrillContext) -> None:
    """The fault is over once it is done (the subscriptions reconnect by themselves)."""


def pubsub_was_cut(ctx: DrillContext) -> list[Check]:
    killed = int(ctx.state.get("pubsub_killed", 0))
    return [Check("pub/sub connections cut", killed > 0, f"{killed} cut")]


# -- poison records --------------------------------------------------------------------------


def _poison_records(ctx: DrillContext) -> list[tuple[str, bytes, str, str]]:
    """(key, value, message id, kind): the three kinds of issue 15, written as a gateway
    writes records (its own encoder), then corrupted."""
    from gateway.protocol import dm_conversation, message_id
    from gateway.records import encode_record

    info = ctx.stack.info
    region = info.regions[0].name if info.regions else "local"
    sender, peer = f"drill-poison-a-{ctx.suffix}", f"drill-poison-b-{ctx.suffix}"
    records = []

    def record(conv: str, kind: str, **fields: Any) -> dict[str, Any]:
        cmid = uuid.uuid4().hex
        value = encode_record(
            message_id=message_id(sender, cmid),
            conversation_id=conv,
            sender=sender,
            device="drill",
            client_msg_id=cmid,
            body=str(fields.pop("body", "drill poison")),
            accepted_at=int(fields.pop("ts", int(time.time() * 1000))),
            node="drill",
            epoch=0,
            region=region,
            **fields,
        )
        parsed: dict[str, Any] = json.loads(value)
        parsed["_kind"] = kind
        return parsed

    dm = dm_conversation(sender, peer)
    # A group record whose conversation is not g:<gid> (the recipients lookup fails).
    bogus = record(f"drill-bogus-{ctx.suffix}", "group conv not g:<gid>", group_id=f"g{ctx.suffix}")
    # A ts beyond bigint (Cassandra refuses it).
    huge = record(dm, "ts beyond bigint", to=peer, ts=2**70)
    # A lone surrogate that reached Kafka (not encodable as UTF-8).
    lone = record(dm, "lone surrogate", to=peer, body="poison")
    for parsed in (bogus, huge, lone):
        kind = parsed.pop("_kind")
        value = json.dumps(parsed)
        if kind == "lone surrogate":
            value = value.replace('"body": "poison"', '"body": "x\\ud83d"')
        records.append((str(parsed["conv"]), value.encode(), str(parsed["mid"]), kind))
    return records


async def _produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value=value, key=key.encode())
    finally:
        await producer.stop()


def inject_poison(ctx: DrillContext) -> None:
    """Poison records into the real messages topic, among the live traffic."""
    info = ctx.stack.info
    records = _poison_records(ctx)
    ctx.state["poison"] = {mid: kind for _key, _value, mid, kind in records}
    asyncio.run(
        _produce(info.kafka_bootstrap, info.kafka_topic, [(k, v) for k, v, _, _ in records])
    )


def poison_dead_lettered(ctx: DrillContext) -> list[Check]:
    """Every poison record reached the DLQ with reason poison."""
    from opsctl.dlq import list_records, local_target

    wanted: dict[str, str] = dict(ctx.state.get("poison", {}))
    target = local_target(ctx.stack.config.state_dir)
    found: dict[str, str] = {}
    deadline = time.monotonic() + DLQ_WAIT_S
    while True:
        for record in list_records(target):
            data = record.as_dict()
            try:
                mid = json.loads(data.get("value") or "{}").get("mid")
            except ValueError:
                continue
            if mid in wanted:
                found[mid] = str(data.get("reason"))
        if set(found) >= set(wanted) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    checks = []
    for mid, kind in wanted.items():
        reason = found.get(mid)
        checks.append(
            Check(
                f"poison record in the DLQ ({kind})",
                reason == "poison",
                f"reason {reason}" if reason else f"not dead-lettered in {DLQ_WAIT_S:.0f} s",
            )
        )
    return checks
