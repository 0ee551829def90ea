"""The dispatcher's batch settling (gateway.dispatcher._settle): poison records are isolated and
dead-lettered after bounded attempts, outages are retried forever and never dead-letter anything.
Only the batch steps are faked (``process``, the backend probe, the DLQ producer)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from gateway import dispatcher as dispatcher_module
from gateway.dispatcher import (
    MAX_POISON_STREAK,
    MAX_RECORD_ATTEMPTS,
    Dispatcher,
    is_transient,
)
from tests.gateway.fakes import config

pytestmark = pytest.mark.unit

TOPIC = "im.messages"


class NoHostAvailable(Exception):
    """Named like cassandra-driver's: an outage."""


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(self, topic: str, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, **kwargs, "headers": dict(kwargs["headers"])})


class Settling(Dispatcher):
    """A dispatcher whose ``process`` fails as ``fail(chunk)`` says, and whose probe answers
    ``healthy()``; it records the chunks that succeeded, in order."""

    def __init__(self) -> None:
        super().__init__(config())
        self.dlq = FakeProducer()
        self.kafka_ok = True
        self.done: list[int] = []  # offsets processed successfully, in order
        self.calls = 0
        self.fail: Any = lambda chunk: None
        self.healthy: Any = lambda: True
        self.stop_after: int | None = None

    async def process(self, raw_records: list[Any]) -> None:
        self.calls += 1
        if self.stop_after is not None and self.calls >= self.stop_after:
            self.stopping.set()
        self.stage = "persist"
        error = self.fail(raw_records)
        if error is not None:
            raise error
        self.done.extend(r.offset for r in raw_records)

    async def _backends_ok(self) -> bool:
        return bool(self.healthy())


def records(n: int, partition: int = 0) -> tuple[dict[Any, list[Any]], list[Any]]:
    raws = [
        SimpleNamespace(
            topic=TOPIC, partition=partition, offset=i, key=b"k", value=b"{}", headers=[]
        )
        for i in range(n)
    ]
    tp = (TOPIC, partition)
    return {tp: raws}, raws


def run_batch(d: Settling, batches: dict[Any, list[Any]], raws: list[Any]) -> bool:
    d._owned = set(batches)
    d.consumer = None  # the lag refresh is skipped
    return asyncio.run(asyncio.wait_for(d._run_batch(batches, raws), 30))


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatcher_module, "backoff", lambda attempt: 0)


def test_a_poison_record_is_dead_lettered_and_the_rest_processed_in_order() -> None:
    d = Settling()
    batches, raws = records(50)
    d.fail = lambda chunk: KeyError("g:x") if any(r.offset == 17 for r in chunk) else None
    assert run_batch(d, batches, raws) is True
    assert d.done == [i for i in range(50) if i != 17]  # Kafka order kept
    assert len(d.dlq.sent) == 1
    sent = d.dlq.sent[0]
    assert sent["topic"] == "im.messages.dlq"
    headers = sent["headers"]
    assert headers["reason"] == b"poison"
    assert headers["stage"] == b"persist"
    assert headers["source"] == b"im.messages/0@17"
    assert headers["attempts"] == str(MAX_RECORD_ATTEMPTS).encode()
    assert b"KeyError" in headers["error"]
    samples = {
        s.labels["reason"]: s.value
        for m in d.metrics.registry.collect()
        if m.name == "im_dispatcher_dead_lettered"
        for s in m.samples
    }
    assert samples == {"undecodable": 0.0, "poison": 1.0}


def test_an_outage_is_retried_forever_and_never_dead_letters() -> None:
    d = Settling()
    batches, raws = records(20)
    d.fail = lambda chunk: NoHostAvailable("cassandra down") if d.calls < 60 else None
    assert run_batch(d, batches, raws) is True
    assert d.dlq.sent == []
    assert d.done == list(range(20))  # never split: the whole batch went through at once
    assert d.calls == 60


def test_deterministic_looking_errors_during_a_failed_probe_are_an_outage() -> None:
    d = Settling()
    batches, raws = records(10)
    d.fail = lambda chunk: KeyError("members") if d.calls < 40 else None
    d.healthy = lambda: d.calls >= 40
    assert run_batch(d, batches, raws) is True
    assert d.dlq.sent == []
    assert d.done == list(range(10))


def test_records_before_a_poison_record_are_not_redone_after_it() -> None:
    d = Settling()
    batches, raws = records(8)
    bad = {2, 5}
    d.fail = lambda chunk: ValueError("ts") if any(r.offset in bad for r in chunk) else None
    assert run_batch(d, batches, raws) is True
    assert d.done == [0, 1, 3, 4, 6, 7]
    assert [s["headers"]["source"] for s in d.dlq.sent] == [b"im.messages/0@2", b"im.messages/0@5"]


def test_when_everything_is_poison_only_a_streak_is_dead_lettered_then_it_retries() -> None:
    d = Settling()
    batches, raws = records(MAX_POISON_STREAK + 10)
    d.fail = lambda chunk: TypeError("a bug of this dispatcher")
    d.stop_after = 2000  # then the batch ends uncommitted, as on SIGTERM
    assert run_batch(d, batches, raws) is False
    assert len(d.dlq.sent) == MAX_POISON_STREAK
    assert d.done == []


def test_transient_classification() -> None:
    assert is_transient(TimeoutError())
    assert is_transient(ConnectionRefusedError())
    assert is_transient(NoHostAvailable())
    assert is_transient(type("KafkaTimeoutError", (Exception,), {"retriable": True})())
    from redis.exceptions import ResponseError

    assert is_transient(ResponseError("OOM command not allowed when used memory > 'maxmemory'."))
    assert not is_transient(ResponseError("ERR Error running script"))
    assert not is_transient(KeyError("x"))
    assert not is_transient(UnicodeEncodeError("utf-8", "\ud83d", 0, 1, "surrogates"))
    assert not is_transient(OverflowError())
