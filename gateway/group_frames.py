"""Group frames: create, join, leave and members (docs/protocol.md, section 3.5).

Membership is written to Cassandra (the source of truth), then the Redis members cache is
invalidated (gateway/groups.py) and new members' conversation indexes get the group, so their
next sync finds it; a leaver's index loses it (and sync checks membership regardless).
"""

from __future__ import annotations

from typing import Any

from gateway import groups, state
from gateway.backends import Backends
from gateway.config import Config
from gateway.protocol import ErrorCode, Group, ProtocolError, encode, group_conversation
from gateway.session import Outbox, Session


class GroupFrames:
    def __init__(self, config: Config, backends: Backends, outbox: Outbox) -> None:
        self._max_members = config.max_group_members
        self._backends = backends
        self._outbox = outbox

    async def on_frame(self, session: Session, frame: Group) -> None:
        store = self._backends.store
        if not store.ready:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "group store not available yet", frame.ref)
        gid = frame.group_id
        try:
            await self._change(session, frame)
            members = await groups.group_members(self._backends.redis, store, gid)
        except ProtocolError:
            raise
        except Exception as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", frame.ref) from exc
        if frame.op == "group_members" and session.user not in members:
            raise ProtocolError(ErrorCode.NOT_MEMBER, "not a member of this group", frame.ref)
        reply: dict[str, Any] = {
            "op": "group",
            "group_id": gid,
            "conversation_id": group_conversation(gid),
            "members": members,
        }
        if frame.ref is not None:
            reply["ref"] = frame.ref
        self._outbox.push(session, encode(reply), "group")

    async def _change(self, session: Session, frame: Group) -> None:
        gid, user, conv = frame.group_id, session.user, group_conversation(frame.group_id)
        store, limit = self._backends.store, self._max_members
        if frame.op == "group_create":
            members = list(dict.fromkeys([user, *frame.members]))
            if len(members) > limit:
                raise ProtocolError(ErrorCode.TOO_MANY, f"at most {limit} members", frame.ref)
            if not await store.create_group(gid, user, members):
                raise ProtocolError(ErrorCode.GROUP_EXISTS, "group id taken", frame.ref)
            await self._index(members, conv)
        elif frame.op == "group_join":
            if not await store.group_exists(gid):
                raise ProtocolError(ErrorCode.NOT_FOUND, "no such group", frame.ref)
            if len(await store.members(gid)) >= limit:
                raise ProtocolError(ErrorCode.TOO_MANY, "group is full", frame.ref)
            await store.add_member(gid, user)
            await self._index([user], conv)
        elif frame.op == "group_leave":
            await store.remove_member(gid, user)
            await groups.invalidate(self._backends.redis, gid)
            # Out of the leaver's index too. A record the dispatcher was routing while the
            # member left may put it back (it indexes the members it read): sync checks
            # membership anyway (gateway/delivery.py), so an entry left here is only a cost.
            await store.remove_user_conversation(user, conv)
            await self._backends.redis.srem(state.user_conversations_key(user), conv)
            return
        else:
            return
        await groups.invalidate(self._backends.redis, gid)

    async def _index(self, users: list[str], conv: str) -> None:
        await self._backends.store.add_user_conversations((u, conv) for u in users)
        async with self._backends.redis.pipeline(transaction=False) as pipe:
            for u in users:
                pipe.sadd(state.user_conversations_key(u), conv)
            await pipe.execute()
