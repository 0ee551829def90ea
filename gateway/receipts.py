"""Receipts: the receipt frame (a per-device maximum in state.receipts_key), the ReceiptEvent
published to the gateways of the conversation's members, and its fan-out to the sessions here.

Receipts do not go through Kafka in their region: they are cumulative and idempotent, so a
lost event costs nothing that the next sync (which reports the stored receipts) does not
repair. With peer regions, an accepted receipt is also published on state.RECEIPTS_CHANNEL,
where the relay picks it up and forwards it to the peers' relays through the deliveries topic
(docs/multi-region.md 6): they store it (maximum wins) and publish it to their gateways.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway import groups, state
from gateway.backends import Backends
from gateway.metrics import GatewayMetrics
from gateway.protocol import ErrorCode, ProtocolError, Receipt, dm_members, encode
from gateway.routes import Routes
from gateway.session import Outbox, Session, SessionTable


@dataclass(kw_only=True, slots=True, eq=False)
class Receipts:
    metrics: GatewayMetrics
    backends: Backends
    routes: Routes
    table: SessionTable
    outbox: Outbox

    async def on_frame(self, session: Session, frame: Receipt) -> None:
        conv = frame.conversation_id
        members = await self._conversation_members(session, conv, frame.ref)
        field = state.receipt_field(session.user, session.device, frame.kind)
        try:
            moved = await self.backends.max_receipt(
                keys=[state.receipts_key(conv)], args=[field, frame.seq]
            )
            if moved:
                receipt = {
                    "op": "receipt",
                    "conversation_id": conv,
                    "user_id": session.user,
                    "device_id": session.device,
                    "seq": frame.seq,
                    "kind": frame.kind,
                }
                event = state.ReceiptEvent(members, (session.user, session.device), encode(receipt))
                await self.routes.publish_to_users(members, state.encode_receipt_event(event))
                if self.backends.cfg.peers:
                    forward = state.RegionReceipt(conv, field, frame.seq, event)
                    await self.backends.redis.spublish(
                        state.RECEIPTS_CHANNEL, state.encode_region_receipt(forward)
                    )
        except Exception as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", frame.ref) from exc
        self.metrics.receipts.inc()
        self.outbox.ok(session, frame.ref)

    def on_event(self, event: state.ReceiptEvent) -> None:
        skip_user, skip_device = event.skip or (None, None)
        for user in event.users:
            for session in self.table.by_user.get(user, ()):
                if user == skip_user and session.device == skip_device:
                    continue
                self.outbox.push(session, event.frame, "receipt")

    async def _conversation_members(
        self, session: Session, conv: str, ref: str | None
    ) -> list[str]:
        pair = dm_members(conv)
        if pair is not None:
            members = list(dict.fromkeys(pair))
        else:
            try:
                members = await groups.group_members(
                    self.backends.redis, self.backends.store, conv[2:]
                )
            except Exception as exc:
                raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", ref) from exc
        if session.user not in members:
            raise ProtocolError(ErrorCode.NOT_MEMBER, "not a member of this conversation", ref)
        return members
