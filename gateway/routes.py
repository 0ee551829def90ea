"""The route registry (state.route_key: which gateway nodes a user is connected to) and
presence, which is derived from it: a user is online while any route is unexpired.

Routes are written when a user's first session here opens, refreshed for every user here every
route_ttl_s / 3, and removed when the last one closes; a gateway that dies leaves routes that
expire by themselves. Presence events (state.PresenceEvent) go out when a user's first route
appears or the last one goes away, to every gateway, which pushes them to its watchers.

With peer regions, the relay keeps state.remote_presence_key (the regions where the user has a
route, docs/multi-region.md 6): a user is online while any region lists them, so an event of a
user online elsewhere is published ``quiet`` (watchers see no change; the relay forwards it).
"""

from __future__ import annotations

import time
from typing import Any

from gateway import state
from gateway.backends import Backends
from gateway.config import Config
from gateway.protocol import ErrorCode, Presence, ProtocolError, encode
from gateway.session import Outbox, Session, SessionTable

ROUTE_REFRESH_CHUNK = 500  # users per pipeline when refreshing
MAX_SUBSCRIPTIONS = 1000  # presence subscriptions per session


class Routes:
    def __init__(self, config: Config, backends: Backends, table: SessionTable) -> None:
        self._node_id = config.node_id
        self._ttl_s = config.route_ttl_s
        self._regions = bool(config.peers)  # read remote presence only with peers
        self._backends = backends
        self._table = table

    async def register(self, user: str, *, first_here: bool) -> None:
        now = time.time()
        key = state.route_key(user)
        redis = self._backends.redis
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zcount(key, now, "+inf")
            pipe.zadd(key, {self._node_id: now + self._ttl_s})
            pipe.expire(key, self._ttl_s)
            if self._regions:
                pipe.hvals(state.remote_presence_key(user))
            answers = await pipe.execute()
        online_before = answers[0]
        if first_here and not online_before:
            quiet = self._regions and state.online_elsewhere(answers[3], now)
            online = state.PresenceEvent(user, "online", quiet)
            await redis.spublish(state.PRESENCE_CHANNEL, state.encode_presence(online))

    async def unregister(self, user: str) -> None:
        key = state.route_key(user)
        redis = self._backends.redis
        now = time.time()
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zrem(key, self._node_id)
            pipe.zcount(key, now, "+inf")
            if self._regions:
                pipe.hvals(state.remote_presence_key(user))
            answers = await pipe.execute()
        if not answers[1]:
            quiet = self._regions and state.online_elsewhere(answers[2], now)
            offline = state.PresenceEvent(user, "offline", quiet)
            await redis.spublish(state.PRESENCE_CHANNEL, state.encode_presence(offline))

    async def refresh(self) -> None:
        """Extend the routes of every user with a session here (and drop expired entries)."""
        users = list(self._table.by_user)
        expiry = time.time() + self._ttl_s
        for start in range(0, len(users), ROUTE_REFRESH_CHUNK):
            async with self._backends.redis.pipeline(transaction=False) as pipe:
                for user in users[start : start + ROUTE_REFRESH_CHUNK]:
                    key = state.route_key(user)
                    pipe.zadd(key, {self._node_id: expiry})
                    pipe.zremrangebyscore(key, "-inf", time.time())
                    pipe.expire(key, self._ttl_s)
                await pipe.execute()

    async def statuses(self, users: tuple[str, ...]) -> dict[str, str]:
        now = time.time()
        async with self._backends.redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.zcount(state.route_key(user), now, "+inf")
                if self._regions:
                    pipe.hvals(state.remote_presence_key(user))
            answers = await pipe.execute()
        step = 2 if self._regions else 1
        statuses = {}
        for i, user in enumerate(users):
            here = answers[i * step]
            elsewhere = self._regions and state.online_elsewhere(answers[i * step + 1], now)
            statuses[user] = "online" if here or elsewhere else "offline"
        return statuses

    async def publish_to_users(self, users: list[str], payload: str) -> None:
        """Publish a node channel payload once to every gateway node the users are on."""
        now = time.time()
        redis = self._backends.redis
        async with redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.zrangebyscore(state.route_key(user), now, "+inf")
            routes = await pipe.execute()
        nodes = {node for found in routes for node in found}
        if nodes:
            async with redis.pipeline(transaction=False) as pipe:
                for node in nodes:
                    pipe.spublish(state.node_channel(node), payload)
                await pipe.execute()


class PresenceWatch:
    """Presence frames, and the sessions here watching each user (session.subs is the reverse
    index, so a closing session leaves no watcher behind)."""

    def __init__(self, routes: Routes, outbox: Outbox) -> None:
        self._routes = routes
        self._outbox = outbox
        self.watchers: dict[str, set[Session]] = {}

    async def on_frame(self, session: Session, frame: Presence) -> None:
        if frame.op == "presence_unsubscribe":
            for user in frame.users:
                if session.subs:
                    session.subs.discard(user)
                self._unwatch(user, session)
            self._outbox.ok(session, frame.ref)
            return
        if frame.op == "presence_subscribe":
            subs = session.subs if session.subs is not None else set()
            if len(subs | set(frame.users)) > MAX_SUBSCRIPTIONS:
                raise ProtocolError(
                    ErrorCode.TOO_MANY, f"at most {MAX_SUBSCRIPTIONS} subscriptions", frame.ref
                )
            subs.update(frame.users)
            session.subs = subs
            for user in frame.users:
                self.watchers.setdefault(user, set()).add(session)
        try:
            statuses = await self._routes.statuses(frame.users)
        except Exception as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "try again", frame.ref) from exc
        reply: dict[str, Any] = {"op": "presence", "statuses": statuses}
        if frame.ref is not None:
            reply["ref"] = frame.ref
        self._outbox.push(session, encode(reply), "presence")

    def on_event(self, event: state.PresenceEvent) -> None:
        if event.quiet:
            return  # the user's status did not change: online in another region
        watchers = self.watchers.get(event.user)
        if not watchers:
            return
        frame = encode({"op": "presence", "statuses": {event.user: event.status}})
        for session in list(watchers):
            self._outbox.push(session, frame, "presence")

    def forget(self, session: Session) -> None:
        if session.subs:
            for user in session.subs:
                self._unwatch(user, session)

    def _unwatch(self, user: str, session: Session) -> None:
        watchers = self.watchers.get(user)
        if watchers:
            watchers.discard(session)
            if not watchers:
                del self.watchers[user]
