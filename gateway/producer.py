"""The gateway's Kafka producer, supervised: what a failed send means for the client, when the
producer is replaced, and whether sends work well enough for /readyz.

Why a supervisor. aiokafka's idempotent producer numbers each partition's batches. When a
partition has no leader for longer than ``request_timeout_ms``, its queued batches expire
with their sequence numbers spent; the partition's next batch then reaches the broker with a
gap and is refused with OutOfOrderSequenceNumber, and so is every later one, for as long as
the process lives, while the metadata check behind /readyz still passes. Measured here with a
second broker frozen for 20 s: every send to its partition failed afterwards, the others
worked. Only a new producer (a new producer id, sequences from 0) gets out of it.

What a failed send means (``outcome``):
- ``REFUSED``: Kafka has certainly not written it. Either the producer never queued it
  (``send`` raised), or the broker refused the batch for a reason it checks before appending
  anything (``_REFUSED_BY_BROKER``). The client may treat the message as not sent.
- ``UNKNOWN``: everything else. A timeout, a lost connection or a leaderless partition can
  strike after an earlier attempt of the same batch reached the broker, which may still
  append it (a frozen broker does, when it wakes). The client must resend the same frame;
  the dispatcher keys seqs by message id, so a second copy in Kafka stays one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.metrics import PRODUCER_FAILING, PRODUCER_STATE, SENDER_STOPPED
from gateway.runtime import backoff

log = logging.getLogger(__name__)

# A send path with no success for this long, with at least one failure, makes the pod
# not ready and the producer replaced (a fresh one is ready again: see Producer.healthy).
FAILING_S = 10.0
# Waited for the old producer to hand back its queued batches before they are given up.
STOP_OLD_S = 5.0
# Replacements without a success in between back off like reconnects, up to this.
REPLACE_BACKOFF_CAP_S = 30.0


class Outcome(enum.Enum):
    REFUSED = "refused"
    UNKNOWN = "unknown"


def _error_names(*names: str) -> tuple[type[BaseException], ...]:
    from aiokafka import errors

    return tuple(getattr(errors, name) for name in names)


# Broker answers that a batch was not appended, checked before anything is written. Not
# authorisation: an ACL removed between two attempts of one batch could refuse the second
# after the first was appended.
_REFUSED_BY_BROKER_NAMES = (
    "OutOfOrderSequenceNumber",
    "MessageSizeTooLargeError",
    "RecordListTooLargeError",
    "CorruptRecordException",
)
# Errors after which this producer's state (its id, epoch or sequence numbers) is no longer
# accepted by the broker: nothing but a new producer helps.
_PRODUCER_STATE_NAMES = (
    "OutOfOrderSequenceNumber",
    "UnknownProducerId",
    "InvalidProducerEpoch",
    "InvalidProducerIdMapping",
    "ProducerFenced",
)


def outcome(exc: BaseException | None, *, queued: bool) -> Outcome:
    """What a failed send means for its client (see the module docstring). ``queued``: the
    producer accepted it (the failure came through its delivery future)."""
    if not queued:
        return Outcome.REFUSED
    if exc is not None and isinstance(exc, _error_names(*_REFUSED_BY_BROKER_NAMES)):
        return Outcome.REFUSED
    return Outcome.UNKNOWN


def needs_new_producer(exc: BaseException | None) -> bool:
    return exc is not None and isinstance(exc, _error_names(*_PRODUCER_STATE_NAMES))


class ProducerReplaced(ConnectionError):
    """Set on the sends a replaced producer had queued and did not settle in time."""


class Producer:
    """One live aiokafka producer at a time, replaced when it can no longer deliver.

    ``factory`` builds an unstarted AIOKafkaProducer; ``on_replaced(reason)`` counts
    replacements. Every send is reported through ``settled`` by its caller's callback, so the
    supervisor sees the same outcomes the clients do.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        on_replaced: Callable[[str], None],
        *,
        failing_s: float = FAILING_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._on_replaced = on_replaced
        self._failing_s = failing_s
        self._clock = clock
        self.current: Any = None
        # Futures of the current producer not settled yet -> when queued (oldest first): a
        # send stuck this long counts as failing, and a replaced producer's are failed with
        # ProducerReplaced if it cannot deliver them while stopping.
        self._pending: dict[asyncio.Future[Any], float] = {}
        self._replacing: asyncio.Task[None] | None = None
        self._replacing_reason = ""
        # Old producers still stopping after STOP_OLD_S (kept so close() can wait for them).
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False
        self._replacements_in_a_row = 0
        self._first_failure_at: float | None = None  # since the last success
        self._last_success_at: float | None = None

    # ---- sending -----------------------------------------------------------------------

    async def send(self, topic: str, *, value: bytes, key: bytes) -> asyncio.Future[Any]:
        """Queue one record; raises when the producer refused it (nothing was queued)."""
        producer, pending = self.current, self._pending
        if producer is None or self._replacing is not None or self._closed:
            raise ConnectionError("kafka producer being replaced")
        # Race: aiokafka's send can wait (a full batch) while a replacement starts, so the
        # producer and its pending dict are taken before the wait and checked after it.
        future: asyncio.Future[Any] = await producer.send(topic, value=value, key=key)
        if producer is not self.current and not future.done():
            # Queued on a producer being stopped, perhaps after its leftovers were failed.
            future.set_exception(ProducerReplaced("kafka producer replaced"))
            return future
        pending[future] = self._clock()
        future.add_done_callback(lambda done: pending.pop(done, None))
        return future

    def settled(self, exc: BaseException | None) -> None:
        """Called once per queued send with its error (None: written)."""
        if isinstance(exc, ProducerReplaced):
            return  # about the old producer, settled after the new one took over
        now = self._clock()
        if exc is None:
            self._last_success_at = now
            self._first_failure_at = None
            self._replacements_in_a_row = 0
            return
        if needs_new_producer(exc):
            self.replace(PRODUCER_STATE)
        self.refused()  # the failure clock (a replacement under way makes it start none)

    def refused(self) -> None:
        """A send that failed or that the producer would not queue: counts towards
        ``failing``."""
        now = self._clock()
        if self._first_failure_at is None:
            self._first_failure_at = now
        if self._failing_for(now) is not None:
            self.replace(PRODUCER_FAILING)

    def _failing_for(self, now: float) -> float | None:
        """How long sends have failed or waited unsettled without a success, once that is
        FAILING_S or more; else None. A leader frozen before the metadata says so makes sends
        wait, not fail: aiokafka resends them to it after every request timeout."""
        if self._last_success_at is not None and now - self._last_success_at < self._failing_s:
            return None  # a partial failure: other partitions work
        oldest_pending = next(iter(self._pending.values()), None)
        starts = [t for t in (self._first_failure_at, oldest_pending) if t is not None]
        if not starts or now - min(starts) < self._failing_s:
            return None
        return now - min(starts)

    # ---- health ------------------------------------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        """For /readyz, and starts a replacement that is due: not ready when sends have failed
        or waited for FAILING_S without a success, nor while that replacement runs. A finished
        replacement resets the clock: a pod out of rotation gets no sends, so no success, and
        would never come back otherwise."""
        if self.current is None or self._closed:
            return False, "kafka producer not running"
        sender = getattr(getattr(self.current, "_sender", None), "sender_task", None)
        if self._replacing is None and sender is not None and sender.done():
            # aiokafka's sender died (a fatal error): every later send would fail.
            self.replace(SENDER_STOPPED)
        if self._replacing is not None:
            # Only a producer replaced for failing keeps the pod out of rotation. The others
            # take seconds, and one partition's sequences strike every gateway at once after
            # its leader comes back: they stay ready, refusing sends meanwhile.
            if self._replacing_reason == PRODUCER_FAILING:
                return False, "kafka producer being replaced"
            return True, "ready"
        failing_for = self._failing_for(self._clock())
        if failing_for is not None:
            # Replaced from here too: a pod out of rotation gets no sends to trigger it.
            self.replace(PRODUCER_FAILING)
            return False, f"kafka sends failing for {failing_for:.0f} s"
        return True, "ready"

    @property
    def replacing(self) -> bool:
        return self._replacing is not None

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self, stop: asyncio.Event) -> bool:
        """Start the first producer, retrying with backoff; False if ``stop`` came first."""
        attempt = 0
        while not stop.is_set():
            producer = self._factory()
            try:
                await producer.start()
            except Exception as exc:
                log.warning("kafka not reachable yet: %r", exc)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            self.current = producer
            return True
        return False

    def replace(self, reason: str) -> None:
        """Start replacing the producer (at most one replacement at a time; none once
        closing: the sender a shutdown stops is not a failure)."""
        if self._replacing is not None or self.current is None or self._closed:
            return
        log.warning("replacing the kafka producer: %s", reason)
        self._on_replaced(reason)
        self._replacing_reason = reason
        self._replacing = asyncio.get_running_loop().create_task(self._replace())

    async def _replace(self) -> None:
        old, pending = self.current, self._pending
        self._pending = {}
        try:
            # The old one first: its queued batches either reach Kafka or are failed, and a
            # new producer started before that would race them onto the same partitions.
            await self._stop(old, pending)
            delay = backoff(self._replacements_in_a_row, base=0.5, cap=REPLACE_BACKOFF_CAP_S)
            self._replacements_in_a_row += 1
            await asyncio.sleep(delay)
            while True:
                producer = self._factory()
                try:
                    await producer.start()
                    break
                except BaseException as exc:
                    # Cancelled too (close() during a replacement): never leave one half-started.
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(producer.stop(), STOP_OLD_S)
                    if not isinstance(exc, Exception):
                        raise
                    log.warning("kafka producer not restarted yet: %r", exc)
                    await asyncio.sleep(backoff(self._replacements_in_a_row, cap=5.0))
            self.current = producer
            self._first_failure_at = None
        finally:
            self._replacing = None

    async def _stop(self, producer: Any, pending: dict[asyncio.Future[Any], float]) -> None:
        """Stop ``producer``, giving its queued batches STOP_OLD_S to settle. Not by
        cancelling its stop() (aiokafka would then never close its sender and connections):
        the batches left are failed, which ends its flush, and the stop goes on."""
        stopping = asyncio.get_running_loop().create_task(self._quietly(producer.stop()))
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)
        await asyncio.wait({stopping}, timeout=STOP_OLD_S)
        if not stopping.done():
            accumulator = getattr(producer, "_message_accumulator", None)
            if accumulator is not None:
                accumulator.fail_all(ProducerReplaced("kafka producer replaced"))
        # Whatever is still open will never be settled by that producer; it may have been
        # sent, so its clients learn the outcome is unknown.
        for future in list(pending):
            if not future.done():
                future.set_exception(ProducerReplaced("kafka producer replaced"))

    @staticmethod
    async def _quietly(stop: Any) -> None:
        with contextlib.suppress(Exception):
            await stop

    async def close(self) -> None:
        self._closed = True
        if self._replacing is not None:
            self._replacing.cancel()
            with contextlib.suppress(BaseException):
                await self._replacing
        if self.current is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.current.stop(), 2)
        if self._stopping:
            await asyncio.wait(set(self._stopping), timeout=2)

    async def cluster_answers(self, timeout_s: float) -> bool:
        """Whether any known broker answers a metadata request within ``timeout_s``, all asked
        at once. aiokafka's own check asks one broker at a time in random order, so with one
        broker of two frozen half of the checks timed out: every gateway flapped unready
        although sends to the other broker's partitions worked."""
        from aiokafka.protocol.metadata import MetadataRequest

        if self._replacing is not None:
            raise ConnectionError("kafka producer being replaced")  # its client is closed
        client = self.current.client
        nodes = [broker.nodeId for broker in client.cluster.brokers()]
        if not nodes:  # nothing known yet: the bootstrap servers
            await asyncio.wait_for(client.fetch_all_metadata(), timeout_s)
            return True
        asks = [
            asyncio.ensure_future(asyncio.wait_for(client.send(n, MetadataRequest([])), timeout_s))
            for n in nodes
        ]
        try:
            for answer in asyncio.as_completed(asks):
                with contextlib.suppress(Exception):
                    await answer
                    return True
            return False
        finally:
            for ask in asks:
                ask.cancel()
