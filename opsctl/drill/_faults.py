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
from opsctl.local._extra_broker import STACK_BROKER_ID, ExtraBroker

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


# -- one partition without a leader ---------------------------------------------------------


def _extra_broker(ctx: DrillContext) -> ExtraBroker:
    broker = ctx.state["extra_broker"]
    assert isinstance(broker, ExtraBroker)
    return broker


def partition_leaderless(ctx: DrillContext) -> None:
    """A second broker joins the stack's Kafka, the messages topic's last partition moves onto
    it alone, and the broker is frozen: that partition has no leader, the others keep theirs."""
    broker = ExtraBroker(ctx.stack, ctx.report_dir / "extra-broker")
    ctx.state["extra_broker"] = broker
    broker.start()
    topic = ctx.stack.info.kafka_topic
    partition = max(asyncio.run(broker.leaders(topic)))
    ctx.state["leaderless"] = f"{topic}-{partition}"
    ctx.state["leaderless_partition"] = partition
    broker.reassign(topic, {partition: [broker.node_id]})
    broker.freeze()


def leaderless_holding(ctx: DrillContext) -> None:
    """While held: note once that the partition is seen without a leader (the fault took)."""
    if ctx.state.get("leaderless_seen"):
        return
    leaders = asyncio.run(_extra_broker(ctx).leaders(ctx.stack.info.kafka_topic))
    if leaders.get(int(ctx.state["leaderless_partition"])) == -1:
        ctx.state["leaderless_seen"] = True


def partition_led_again(ctx: DrillContext) -> None:
    """Thaw the broker, move the partition back to the stack's broker, stop the extra one.
    Taken out of the state first: a restore called again after an error does nothing."""
    broker = ctx.state.pop("extra_broker", None)
    if not isinstance(broker, ExtraBroker):
        return  # inject failed before starting it, or restored already
    broker.thaw()
    if "leaderless_partition" in ctx.state:
        partition = int(ctx.state["leaderless_partition"])
        # If this fails the broker keeps running: it may hold the partition's only replica.
        broker.reassign(ctx.stack.info.kafka_topic, {partition: [STACK_BROKER_ID]})
    broker.stop()


def partition_was_leaderless(ctx: DrillContext) -> list[Check]:
    where = ctx.state.get("leaderless", "the partition")
    seen = bool(ctx.state.get("leaderless_seen"))
    detail = f"{where}: no leader while held" if seen else f"{where}: a leader throughout"
    return [Check("partition without a leader", seen, detail)]


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


# -- slow-reader flood -----------------------------------------------------------------------

# The gateways' own count of connections closed because their send queue overflowed (a reader
# that never reads does not see the close frame itself).
SLOW_CONSUMER_SERIES = 'im_gateway_disconnects_total{reason="slow_consumer"}'
# A gateway may grow this much under the flood; unbounded queues would grow by hundreds of MB.
FLOOD_RSS_GROWTH_MAX = 256 * 1024 * 1024


def _gateway_metric(ctx: DrillContext, name: str) -> dict[str, float]:
    """Gateway base URL -> the value of ``name``: a bare metric name sums every label set."""
    import httpx

    values: dict[str, float] = {}
    for base in ctx.stack.info.gateway_http_urls:
        total = 0.0
        text = httpx.get(f"{base}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
        values[base] = total
    return values


def _gateway_rss(ctx: DrillContext) -> dict[str, float]:
    """Gateway -> its resident memory in bytes (/proc: the gateway exports no process metrics)."""
    from pathlib import Path

    sizes: dict[str, float] = {}
    for name in ctx.stack.info.gateway_ids:
        pid = ctx.stack.pid(name)
        if pid is None:
            continue
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes[name] = float(line.split()[1]) * 1024
    return sizes


def start_flood(ctx: DrillContext) -> None:
    from opsctl.drill._flood import Flood
    from opsctl.drill._probe import Credentials

    info = ctx.stack.info
    ctx.state["drops_before"] = _gateway_metric(ctx, "im_gateway_send_queue_drops_total")
    ctx.state["slow_before"] = _gateway_metric(ctx, SLOW_CONSUMER_SERIES)
    ctx.state["rss_before"] = _gateway_rss(ctx)
    ctx.state["rss_peak"] = dict(ctx.state["rss_before"])
    flood = Flood(
        list(info.gateway_ws_urls),
        Credentials(info.jwt_secret_file, info.jwt_issuer, info.jwt_audience),
        ctx.suffix,
    )
    ctx.state["flood"] = flood
    flood.start()


def flood_holding(ctx: DrillContext) -> None:
    """While held: the gateways' peak resident memory."""
    now = _gateway_rss(ctx)
    peak: dict[str, float] = ctx.state["rss_peak"]
    for base, value in now.items():
        peak[base] = max(peak.get(base, 0.0), value)


def stop_flood(ctx: DrillContext) -> None:
    flood = ctx.state.get("flood")
    if flood is not None:
        flood.stop()


def flood_contained(ctx: DrillContext) -> list[Check]:
    """The gateways' memory stayed bounded under the flood (the probe's gates say the rest)."""
    flood = ctx.state["flood"]
    figures = flood.figures
    (ctx.report_dir / "flood.json").write_text(json.dumps(figures.as_dict(), indent=2))
    drops_after = _gateway_metric(ctx, "im_gateway_send_queue_drops_total")
    drops = sum(drops_after.values()) - sum(ctx.state["drops_before"].values())
    slow_after = _gateway_metric(ctx, SLOW_CONSUMER_SERIES)
    closed = sum(slow_after.values()) - sum(ctx.state["slow_before"].values())
    growth = max(
        ctx.state["rss_peak"][base] - ctx.state["rss_before"].get(base, 0.0)
        for base in ctx.state["rss_peak"]
    )
    # Not gated: a gateway that stops reading a connection whose replies do not drain never
    # overflows its queue; one that pushes live frames to it overflows once the socket buffers
    # are full. Either is fine as long as its memory stays bounded and nobody else suffers.
    detail = (
        f"{drops:.0f} send-queue overflows, {closed:.0f} closed as slow consumers so far, "
        f"{figures.syncs_sent} syncs asked by {figures.connects} connections"
    )
    from opsctl.drill._flood import SLOW_READERS

    ran = figures.connects >= SLOW_READERS and figures.syncs_sent > 0
    return [
        Check(
            "flood ran", ran or None, f"{figures.connects} connections, {figures.syncs_sent} syncs"
        ),
        Check(
            "gateway memory bounded",
            growth <= FLOOD_RSS_GROWTH_MAX,
            f"peak growth {growth / 2**20:.0f} MiB (limit {FLOOD_RSS_GROWTH_MAX / 2**20:.0f} MiB); "
            + detail,
        ),
    ]
