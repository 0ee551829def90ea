"""The gateway's Kafka producer (gateway/producer.py and the partitioner in gateway/backends.py):
what a failed send means for the client, when the producer is replaced, what /readyz says.

The supervisor is tested here on a fake aiokafka producer (its logic only); the real fault, a
partition without a leader for a while, is injected into a real broker in
test_producer_faults.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import errors
from aiokafka.partitioner import DefaultPartitioner

from gateway.backends import CachedPartitioner
from gateway.metrics import PRODUCER_FAILING, PRODUCER_STATE, SENDER_STOPPED, GatewayMetrics
from gateway.producer import (
    Outcome,
    Producer,
    ProducerReplaced,
    outcome,
)
from gateway.protocol import ErrorCode, Send
from gateway.send import Sender
from tests.gateway import fakes

pytestmark = pytest.mark.unit


def test_cached_partitioner_matches_the_default_for_every_key() -> None:
    default, cached = DefaultPartitioner(), CachedPartitioner(size=50)
    partitions = list(range(6))
    keys = [f"dm:user-{i}:user-{i + 1}".encode() for i in range(200)] + [b"", b"g:team"]
    for _ in range(2):  # the second pass is served from the cache (and overflows it)
        for key in keys:
            assert cached(key, partitions, partitions) == default(key, partitions, partitions)
    # A partition count change is honoured (only the hash is cached, not the partition).
    assert cached(keys[0], [0, 1, 2], [0, 1, 2]) == default(keys[0], [0, 1, 2], [0, 1, 2])


def test_keyless_records_go_to_an_available_partition() -> None:
    assert CachedPartitioner()(None, [0, 1, 2], [2]) == 2


# ---- outcomes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        errors.OutOfOrderSequenceNumber(),
        errors.MessageSizeTooLargeError(),
        errors.RecordListTooLargeError(),
        errors.CorruptRecordException(),
    ],
)
def test_a_refusal_checked_before_any_append_is_definite(exc: BaseException) -> None:
    assert outcome(exc, queued=True) is Outcome.REFUSED


@pytest.mark.parametrize(
    "exc",
    [
        errors.RequestTimedOutError(),
        errors.KafkaTimeoutError(),
        errors.LeaderNotAvailableError(),
        errors.NotLeaderForPartitionError(),
        errors.KafkaConnectionError(),
        errors.TopicAuthorizationFailedError(),  # an earlier attempt may have been appended
        ProducerReplaced("replaced"),
        asyncio.CancelledError(),
        RuntimeError("anything else"),
    ],
)
def test_a_failure_after_queueing_is_unknown(exc: BaseException) -> None:
    assert outcome(exc, queued=True) is Outcome.UNKNOWN


def test_a_send_never_queued_is_refused_whatever_the_error() -> None:
    assert outcome(errors.KafkaTimeoutError(), queued=False) is Outcome.REFUSED


# ---- the supervisor ------------------------------------------------------------------------


class FakeAioProducer:
    """What the supervisor touches of AIOKafkaProducer: start, stop, send, the sender task."""

    def __init__(self, *, settle_on_stop: bool = True) -> None:
        self.started = False
        self.stopped = False
        self.futures: list[asyncio.Future[Any]] = []
        self.settle_on_stop = settle_on_stop
        self.sender_task: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sender = self

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True
        if self.settle_on_stop:
            for future in self.futures:
                if not future.done():
                    future.set_exception(errors.KafkaConnectionError())

    async def send(self, topic: str, *, value: bytes, key: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


class Harness:
    def __init__(self, **producer_kwargs: Any) -> None:
        self.now = 0.0
        self.made: list[FakeAioProducer] = []
        self.replaced: list[str] = []
        self.producer_kwargs = producer_kwargs
        self.supervisor = Producer(self._make, self.replaced.append, clock=lambda: self.now)

    def _make(self) -> FakeAioProducer:
        self.made.append(FakeAioProducer(**self.producer_kwargs))
        return self.made[-1]

    async def start(self) -> Producer:
        assert await self.supervisor.start(asyncio.Event())
        return self.supervisor

    async def replacement_done(self) -> None:
        task = self.supervisor._replacing
        assert task is not None, "no replacement under way"
        await asyncio.wait_for(task, 60)


def run(scenario: Callable[[], Any]) -> None:
    asyncio.run(scenario())


@pytest.fixture(autouse=True)
def _fast_replacements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.producer.backoff", lambda *a, **k: 0.0)
    monkeypatch.setattr("gateway.producer.STOP_OLD_S", 0.05)


def test_a_producer_state_error_replaces_the_producer_and_the_pod_stays_ready() -> None:
    async def scenario() -> None:
        h = Harness()
        supervisor = await h.start()
        first = h.made[0]
        assert supervisor.healthy() == (True, "ready")
        supervisor.settled(errors.OutOfOrderSequenceNumber())
        assert h.replaced == [PRODUCER_STATE]
        # Seconds, and every gateway at once after a leader is back: no one leaves rotation.
        assert supervisor.healthy() == (True, "ready")
        assert supervisor.replacing
        with pytest.raises(ConnectionError):  # nothing is queued on the way out
            await supervisor.send("t", value=b"v", key=b"k")
        # More failures of the same kind while it is replaced start nothing more.
        supervisor.settled(errors.OutOfOrderSequenceNumber())
        await h.replacement_done()
        assert h.replaced == [PRODUCER_STATE]
        assert first.stopped
        assert supervisor.current is h.made[1]
        assert supervisor.healthy() == (True, "ready")

    run(scenario)


def test_sends_failing_for_the_window_make_it_unready_then_replace_it() -> None:
    async def scenario() -> None:
        h = Harness()
        supervisor = await h.start()
        supervisor.settled(errors.RequestTimedOutError())
        h.now = 9.9
        supervisor.refused()
        assert supervisor.healthy() == (True, "ready")
        assert h.replaced == []
        # A pod out of rotation gets no sends: the health check itself replaces it.
        h.now = 10.0
        ready, why = supervisor.healthy()
        assert not ready
        assert why == "kafka sends failing for 10 s"
        assert h.replaced == [PRODUCER_FAILING]
        await h.replacement_done()
        assert supervisor.healthy() == (True, "ready")
        h.now = 100.0  # the failure clock restarted with the new producer
        assert supervisor.healthy() == (True, "ready")

    run(scenario)


def test_a_send_waiting_for_the_window_counts_as_failing() -> None:
    async def scenario() -> None:
        h = Harness()
        supervisor = await h.start()
        supervisor.settled(None)  # a success at 0
        h.now = 1.0
        await supervisor.send("t", value=b"v", key=b"k")  # queued at 1, never settled
        h.now = 10.9
        assert supervisor.healthy() == (True, "ready")
        h.now = 11.0
        assert supervisor.healthy() == (False, "kafka sends failing for 10 s")
        assert h.replaced == [PRODUCER_FAILING]
        await h.replacement_done()

    run(scenario)


def test_a_success_in_between_keeps_a_partial_failure_ready() -> None:
    async def scenario() -> None:
        h = Harness()
        supervisor = await h.start()
        # One partition leaderless: a send to it waits from 0 on, the others succeed.
        await supervisor.send("t", value=b"v", key=b"k")
        for second in range(1, 30):
            h.now = float(second)
            supervisor.settled(errors.LeaderNotAvailableError())
            supervisor.settled(None)
        assert supervisor.healthy() == (True, "ready")
        assert h.replaced == []
        # The same waiting send with no success for FAILING_S: the producer is failing.
        h.now = 39.0
        assert supervisor.healthy() == (False, "kafka sends failing for 39 s")
        await h.replacement_done()

    run(scenario)


def test_a_stopped_sender_is_noticed_by_the_health_check() -> None:
    async def scenario() -> None:
        h = Harness()
        supervisor = await h.start()
        h.made[0].sender_task.set_exception(errors.KafkaError("sender died"))
        assert supervisor.healthy() == (True, "ready")
        assert h.replaced == [SENDER_STOPPED]
        assert supervisor.replacing
        await h.replacement_done()
        assert supervisor.healthy() == (True, "ready")

    run(scenario)


def test_sends_the_old_producer_never_settles_are_failed_as_replaced() -> None:
    async def scenario() -> None:
        h = Harness(settle_on_stop=False)
        supervisor = await h.start()
        stuck = await supervisor.send("t", value=b"v", key=b"k")
        supervisor.settled(errors.UnknownProducerId())
        await h.replacement_done()
        assert isinstance(stuck.exception(), ProducerReplaced)
        # Reported late, it is about the old producer: the new one's clock does not start.
        supervisor.settled(stuck.exception())
        h.now = 60.0
        assert supervisor.healthy() == (True, "ready")

    run(scenario)


# ---- what the client is told ---------------------------------------------------------------


def _failure_frame(
    exc: BaseException, *, resend: bool = False
) -> tuple[dict[str, Any], GatewayMetrics]:
    async def scenario() -> tuple[dict[str, Any], GatewayMetrics]:
        h = Harness()
        await h.start()
        metrics = GatewayMetrics()
        backends: Any = type("B", (), {"producer": h.supervisor})()
        sender = Sender(
            config=fakes.config(),
            metrics=metrics,
            backends=backends,
            outbox=fakes.outbox(metrics=metrics),
            dedup=None,  # type: ignore[arg-type]
        )
        session = fakes.session("alice")
        frame = Send(client_msg_id="m1", body="hi", to="bob", group_id=None, ref="r1")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(exc)
        sender._produced(
            (session, frame, "dm:alice:bob", "mid", 1, "key", 0.0, resend),  # type: ignore[arg-type]
            future,
        )
        for _ in range(5):
            await asyncio.sleep(0)
        [written] = fakes.ws_of(session).frames()
        return written, metrics

    return asyncio.run(scenario())


def test_a_timed_out_send_is_answered_outcome_unknown() -> None:
    frame, metrics = _failure_frame(errors.RequestTimedOutError())
    assert (frame["op"], frame["code"], frame["ref"]) == ("error", ErrorCode.OUTCOME_UNKNOWN, "r1")
    failed = metrics.messages_failed
    assert failed.labels("kafka_unknown")._value.get() == 1
    assert failed.labels("kafka")._value.get() == 0


def test_a_send_refused_before_any_append_is_answered_unavailable() -> None:
    frame, metrics = _failure_frame(errors.MessageSizeTooLargeError())
    assert (frame["code"], frame["ref"]) == (ErrorCode.UNAVAILABLE, "r1")
    assert metrics.messages_failed.labels("kafka")._value.get() == 1


def test_a_resend_refused_outright_is_still_unknown() -> None:
    # An earlier attempt of the same client_msg_id may be in Kafka: never "not written".
    frame, metrics = _failure_frame(errors.MessageSizeTooLargeError(), resend=True)
    assert frame["code"] == ErrorCode.OUTCOME_UNKNOWN
    assert metrics.messages_failed.labels("kafka_unknown")._value.get() == 1


def test_a_send_queued_while_a_replacement_starts_is_failed_as_replaced() -> None:
    async def scenario() -> None:
        h = Harness()
        supervisor = await h.start()
        first = h.made[0]
        release = asyncio.Event()
        queued = first.send

        async def slow_send(topic: str, *, value: bytes, key: bytes) -> asyncio.Future[Any]:
            await release.wait()  # a full batch: aiokafka waits for room
            return await queued(topic, value=value, key=key)

        first.send = slow_send  # type: ignore[method-assign]
        sending = asyncio.ensure_future(supervisor.send("t", value=b"v", key=b"k"))
        await asyncio.sleep(0)
        supervisor.settled(errors.OutOfOrderSequenceNumber())
        await h.replacement_done()
        release.set()
        future = await sending
        assert isinstance(future.exception(), ProducerReplaced)

    run(scenario)


def test_an_old_producer_that_will_not_stop_has_its_batches_failed_and_is_not_cancelled() -> None:
    async def scenario() -> None:
        h = Harness(settle_on_stop=False)
        supervisor = await h.start()
        first = h.made[0]
        stopped = asyncio.Event()
        failed: list[BaseException] = []

        async def slow_stop() -> None:
            await stopped.wait()  # its flush waits for a frozen leader

        first.stop = slow_stop  # type: ignore[method-assign]
        first._message_accumulator = type(  # type: ignore[attr-defined]
            "Acc", (), {"fail_all": lambda _self, exc: (failed.append(exc), stopped.set())}
        )()
        supervisor.settled(errors.UnknownProducerId())
        await h.replacement_done()
        assert [type(e) for e in failed] == [ProducerReplaced]  # the flush was ended, not cut
        await supervisor.close()
        assert not supervisor._stopping

    run(scenario)


def test_no_replacement_once_closing() -> None:
    async def scenario() -> None:
        h = Harness()
        supervisor = await h.start()
        await supervisor.close()
        h.made[0].sender_task.set_exception(errors.KafkaError("stopped by the shutdown"))
        assert supervisor.healthy() == (False, "kafka producer not running")
        supervisor.settled(errors.OutOfOrderSequenceNumber())
        assert h.replaced == []
        with pytest.raises(ConnectionError):
            await supervisor.send("t", value=b"v", key=b"k")

    run(scenario)
