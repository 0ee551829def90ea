"""Reading and replaying the dead-letter topic through the Kafka client (aiokafka, imported where
used). Every call here is synchronous for the CLI; each runs its own event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsctl.errors import CheckFailed, UserInputError

DLQ_SUFFIX = ".dlq"  # gateway.dispatcher.DLQ_SUFFIX: the dispatcher writes <topic>.dlq
REPLAY_HEADER = "replay-of"
READ_TIMEOUT_S = 30.0
POLL_S = 0.5


@dataclass(frozen=True)
class KafkaTarget:
    """Where the messages topic, its DLQ and the dispatcher's consumer group are."""

    bootstrap: str
    topic: str  # the messages topic; the DLQ is <topic>.dlq
    group: str  # the dispatcher's consumer group (replay waits for its commits)
    source: str  # for messages: "local stack in <dir>" or "--bootstrap"

    @property
    def dlq_topic(self) -> str:
        return self.topic + DLQ_SUFFIX


def local_target(state_dir: Path | None) -> KafkaTarget:
    """The Kafka of the local stack recorded in ``state_dir`` (its first region's)."""
    from opsctl.local import LocalStack, load_recorded, resolve_state_dir

    where = resolve_state_dir(state_dir)
    config = load_recorded(where)
    if config is None:
        raise UserInputError(
            f"no local stack is recorded in {where}",
            hint="start it with `opsctl local up`, or give --bootstrap for another Kafka",
        )
    stack = LocalStack(config)
    env = stack.imgw_env()
    region = env.get("IMGW_REGION", "local")
    group = env.get("IMGW_KAFKA_CONSUMER_GROUP") or f"im-dispatcher.{region}"
    info = stack.info
    return KafkaTarget(info.kafka_bootstrap, info.kafka_topic, group, f"local stack in {where}")


@dataclass(frozen=True)
class DlqRecord:
    """One record of the DLQ, with the dispatcher's headers."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def position(self) -> str:
        """``<partition>@<offset>`` in the DLQ topic: what ``replay --offset`` takes."""
        return f"{self.partition}@{self.offset}"

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    @property
    def source_topic(self) -> str | None:
        source = self.header("source")
        return source.rsplit("/", 1)[0] if "/" in source else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "reason": self.header("reason") or None,
            "stage": self.header("stage") or None,
            "attempts": int(self.header("attempts")) if self.header("attempts").isdigit() else None,
            "error": self.header("error") or None,
            "source": self.header("source") or None,
            "dispatcher": self.header("dispatcher") or None,
            "replay_of": self.header(REPLAY_HEADER) or None,
            "key": None if self.key is None else _text(self.key),
            "value": _text(self.value),
        }


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _unreachable(target: KafkaTarget, exc: BaseException) -> CheckFailed:
    return CheckFailed(
        f"Kafka at {target.bootstrap} ({target.source}) did not answer: {exc!r}",
        hint="is the stack up? `opsctl local status`",
    )


# -- list ---------------------------------------------------------------------------------------


def list_records(target: KafkaTarget, *, timeout_s: float = READ_TIMEOUT_S) -> list[DlqRecord]:
    """Every record in the DLQ topic now (up to its end offsets), oldest first per partition."""
    try:
        return asyncio.run(_read(target, timeout_s))
    except (CheckFailed, UserInputError):
        raise
    except Exception as exc:
        raise _unreachable(target, exc) from exc


async def _read(target: KafkaTarget, timeout_s: float) -> list[DlqRecord]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=target.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=int(timeout_s * 1000),
    )
    partitions = await _partitions(target, timeout_s)
    await asyncio.wait_for(consumer.start(), timeout_s)
    try:
        tps = [TopicPartition(target.dlq_topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[DlqRecord] = []
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise CheckFailed(f"timed out reading {target.dlq_topic} after {timeout_s:.0f}s")
            fetched = await consumer.getmany(*remaining, timeout_ms=int(POLL_S * 1000))
            for tp, part in fetched.items():
                records += [_record(r) for r in part if r.offset < ends[tp]]
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        records.sort(key=lambda r: (r.partition, r.offset))
        return records
    finally:
        await consumer.stop()


async def _partitions(target: KafkaTarget, timeout_s: float) -> list[int]:
    """The DLQ topic's partition numbers (a missing topic is a failed check)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=target.bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        described = await admin.describe_topics([target.dlq_topic])
    finally:
        await admin.close()
    found = [t for t in described if t.get("topic") == target.dlq_topic]
    if not found or found[0].get("error_code") or not found[0].get("partitions"):
        raise CheckFailed(
            f"Kafka at {target.bootstrap} has no topic {target.dlq_topic}",
            hint="the topics are created by `python -m gateway.migrate`",
        )
    return sorted(int(p["partition"]) for p in found[0]["partitions"])


def _record(raw: Any) -> DlqRecord:
    headers = {str(k): _text(v or b"") for k, v in (raw.headers or ())}
    return DlqRecord(raw.partition, raw.offset, raw.timestamp, raw.key, raw.value or b"", headers)


def select(records: Sequence[DlqRecord], positions: Sequence[str]) -> list[DlqRecord]:
    """The records at ``positions`` (``P@O``, or ``O`` when the DLQ has one partition), in the
    order given; an unknown position is bad input."""
    by_position = {r.position: r for r in records}
    partitions = {r.partition for r in records}
    chosen: list[DlqRecord] = []
    for given in positions:
        position = given
        if "@" not in given and given.isdigit() and len(partitions) <= 1:
            position = f"{next(iter(partitions), 0)}@{given}"
        if position not in by_position:
            known = ", ".join(by_position) or "none"
            raise UserInputError(
                f"--offset {given}: no such record in the DLQ",
                hint=f"positions are PARTITION@OFFSET (`opsctl dlq list`); there are: {known}",
            )
        chosen.append(by_position[position])
    return chosen


# -- replay -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replayed:
    """Where one DLQ record was replayed to, and what became of it."""

    dlq_position: str  # <dlq topic>/<partition>@<offset>: the replay-of header
    topic: str
    partition: int
    offset: int
    # sent (not waited for), processed (committed, not dead-lettered again), poison (it came
    # back to the DLQ: ``error`` says why), pending (not committed within the wait)
    status: str = "sent"
    error: str | None = None
    again: str | None = None  # the position of its new DLQ record, when poison

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "replay_of": self.dlq_position,
            "replayed_to": self.position,
            "status": self.status,
            "error": self.error,
            "dead_lettered_again_at": self.again,
        }


@dataclass(frozen=True)
class ReplayOutcome:
    replayed: list[Replayed]
    waited: bool

    @property
    def poisoned(self) -> list[Replayed]:
        return [r for r in self.replayed if r.status == "poison"]

    @property
    def pending(self) -> list[Replayed]:
        return [r for r in self.replayed if r.status == "pending"]


def replay(
    target: KafkaTarget,
    records: Sequence[DlqRecord],
    *,
    value: bytes | None = None,
    wait_s: float = 0.0,
) -> ReplayOutcome:
    """Produce ``records`` back to their source topics (``value`` replaces the value of the one
    record given); with ``wait_s``, wait until the dispatcher group committed past them and
    report each as processed, poison (dead-lettered again) or pending."""
    if value is not None and len(records) != 1:
        raise UserInputError("a replacement value is for exactly one record (one --offset)")
    try:
        sent = asyncio.run(_produce(target, records, value))
        if wait_s <= 0:
            return ReplayOutcome(sent, waited=False)
        return ReplayOutcome(asyncio.run(_outcome(target, sent, wait_s)), waited=True)
    except (CheckFailed, UserInputError):
        raise
    except Exception as exc:
        raise _unreachable(target, exc) from exc


async def _produce(
    target: KafkaTarget, records: Sequence[DlqRecord], value: bytes | None
) -> list[Replayed]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=target.bootstrap, acks="all", enable_idempotence=True
    )
    await asyncio.wait_for(producer.start(), READ_TIMEOUT_S)
    try:
        sent: list[Replayed] = []
        for record in records:
            topic = record.source_topic or target.topic
            origin = f"{target.dlq_topic}/{record.position}"
            meta = await producer.send_and_wait(
                topic,
                value=record.value if value is None else value,
                key=record.key,
                headers=[(REPLAY_HEADER, origin.encode())],
            )
            sent.append(Replayed(origin, topic, meta.partition, meta.offset))
        return sent
    finally:
        await producer.stop()


async def _outcome(target: KafkaTarget, sent: list[Replayed], wait_s: float) -> list[Replayed]:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=target.bootstrap)
    await asyncio.wait_for(admin.start(), READ_TIMEOUT_S)
    deadline = time.monotonic() + wait_s
    committed: dict[str, bool] = {}
    try:
        while True:
            offsets = await admin.list_consumer_group_offsets(target.group)
            for r in sent:
                done = offsets.get(TopicPartition(r.topic, r.partition))
                committed[r.position] = done is not None and done.offset > r.offset
            if all(committed.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL_S)
    finally:
        await admin.close()
    again = {
        (d.header(REPLAY_HEADER), d.header("source")): d
        for d in await _read(target, READ_TIMEOUT_S)
        if d.header(REPLAY_HEADER)
    }
    out: list[Replayed] = []
    for r in sent:
        back = again.get((r.dlq_position, r.position))
        if back is not None:
            error = back.header("error") or back.header("reason")
            out.append(_with(r, "poison", error, f"{target.dlq_topic}/{back.position}"))
        elif committed[r.position]:
            out.append(_with(r, "processed"))
        else:
            out.append(_with(r, "pending"))
    return out


def _with(r: Replayed, status: str, error: str | None = None, again: str | None = None) -> Replayed:
    return Replayed(r.dlq_position, r.topic, r.partition, r.offset, status, error, again)
