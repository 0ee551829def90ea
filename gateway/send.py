"""The send frame: membership check, dedup claim, produce to Kafka, and the ack once the broker
acknowledged (docs/protocol.md, section 5).

A send is acknowledged only when it is durable in Kafka; the dispatcher does the rest. No task
per message: the ack is written from the producer's delivery callback.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from gateway import groups, state
from gateway.backends import Backends
from gateway.config import Config
from gateway.dedup import DedupWriter
from gateway.metrics import GatewayMetrics
from gateway.producer import Outcome, outcome
from gateway.protocol import (
    ErrorCode,
    ProtocolError,
    Send,
    dm_conversation,
    encode,
    error_frame,
    group_conversation,
    message_id,
)
from gateway.records import encode_record
from gateway.session import Outbox, Session


class _PendingSend(NamedTuple):
    session: Session
    frame: Send
    conv: str
    mid: str
    accepted_at: int
    key: str
    started: float
    # A resend of a claimed, unconfirmed send: an earlier attempt may be in Kafka already.
    resend: bool


@dataclass(kw_only=True, slots=True, eq=False)
class Sender:
    config: Config
    metrics: GatewayMetrics
    backends: Backends
    outbox: Outbox
    dedup: DedupWriter

    async def on_send(self, session: Session, frame: Send) -> None:
        user = session.user
        if frame.group_id is not None:
            conv = group_conversation(frame.group_id)
            if not await self._is_member(frame.group_id, user, frame.ref):
                self.metrics.messages_failed.labels("not_member").inc()
                raise ProtocolError(ErrorCode.NOT_MEMBER, "not a member of this group", frame.ref)
        else:
            assert frame.to is not None
            conv = dm_conversation(user, frame.to)
        key = state.dedup_key(user, frame.client_msg_id)
        accepted_at = int(time.time() * 1000)
        claim = state.DedupClaim(state.CLAIMED, conv, accepted_at)
        try:
            previous = await self.dedup.claim(key, state.encode_dedup(claim))
        except Exception as exc:
            self.metrics.messages_failed.labels("redis").inc()
            raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", frame.ref) from exc
        mid = message_id(user, frame.client_msg_id)
        if previous is not None:
            earlier = state.decode_dedup(previous)
            if earlier.conversation_id != conv:
                self.metrics.messages_failed.labels("duplicate_id").inc()
                raise ProtocolError(
                    ErrorCode.DUPLICATE_ID,
                    "client_msg_id already used for another conversation",
                    frame.ref,
                )
            accepted_at = earlier.accepted_at
            self.metrics.messages_duplicate.inc()
            if earlier.state == state.DURABLE:
                self._ack(session, frame, conv, mid, accepted_at)
                return
            # CLAIMED: accepted earlier but not known durable (in flight, or the gateway died):
            # produce again; the dispatcher keys seqs by message id, so it stays one message.
        # The stamp "ep" is the shard map epoch this gateway last read (gateway.records).
        record = encode_record(
            message_id=mid,
            conversation_id=conv,
            sender=user,
            device=session.device,
            client_msg_id=frame.client_msg_id,
            body=frame.body,
            accepted_at=accepted_at,
            node=self.config.node_id,
            epoch=self.backends.map_epoch,
            region=self.config.region,
            to=None if frame.group_id else frame.to,
            group_id=frame.group_id or None,
        )
        started = time.perf_counter()
        producer = self.backends.producer
        try:
            future = await producer.send(self.config.kafka_topic, value=record, key=conv.encode())
        except Exception as exc:
            # This attempt was never queued, so never written; an earlier one may have been.
            producer.refused()
            reason, code, text = _answer(exc, queued=False, resend=previous is not None)
            self.metrics.messages_failed.labels(reason).inc()
            raise ProtocolError(code, text, frame.ref) from exc
        # No task per message: the ack is written from the delivery callback.
        pending = _PendingSend(
            session, frame, conv, mid, accepted_at, key, started, previous is not None
        )
        future.add_done_callback(functools.partial(self._produced, pending))

    def _produced(self, pending: _PendingSend, future: asyncio.Future[Any]) -> None:
        session, frame, conv, mid, accepted_at, key, started, resend = pending
        failure: BaseException | None = (
            asyncio.CancelledError() if future.cancelled() else future.exception()
        )
        self.backends.producer.settled(failure)
        if failure is not None:
            self._failed(session, frame, failure, resend=resend)
            return
        self.metrics.kafka_produce_latency.observe(time.perf_counter() - started)
        self.metrics.messages_accepted.inc()
        durable = state.DedupClaim(state.DURABLE, conv, accepted_at)
        self.dedup.mark_durable(key, state.encode_dedup(durable))
        self._ack(session, frame, conv, mid, accepted_at)

    def _failed(
        self, session: Session, frame: Send, failure: BaseException, *, resend: bool
    ) -> None:
        reason, code, text = _answer(failure, queued=True, resend=resend)
        self.metrics.messages_failed.labels(reason).inc()
        self.metrics.protocol_errors.labels(code).inc()
        self.outbox.push(session, error_frame(code, text, frame.ref), "error")

    def _ack(self, session: Session, frame: Send, conv: str, mid: str, accepted_at: int) -> None:
        ack = {
            "op": "ack",
            "ref": frame.ref,
            "client_msg_id": frame.client_msg_id,
            "message_id": mid,
            "conversation_id": conv,
            "accepted_at": accepted_at,
        }
        self.outbox.push(session, encode(ack), "ack")

    async def _is_member(self, group_id: str, user: str, ref: str | None) -> bool:
        try:
            members = await groups.group_members(self.backends.redis, self.backends.store, group_id)
        except Exception as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", ref) from exc
        return user in members


def _answer(failure: BaseException, *, queued: bool, resend: bool) -> tuple[str, str, str]:
    """The failure reason, error code and text for a send Kafka did not confirm. A resend of a
    claimed send is never "not written": an earlier attempt may be in Kafka. Unknown: the
    client resends the same frame, and the dispatcher's message id -> seq keeps it one."""
    if not resend and outcome(failure, queued=queued) is Outcome.REFUSED:
        return "kafka", ErrorCode.UNAVAILABLE, "try again"
    return "kafka_unknown", ErrorCode.OUTCOME_UNKNOWN, "resend unchanged"
