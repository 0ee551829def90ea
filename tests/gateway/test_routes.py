"""gateway/routes.py: presence watchers follow subscriptions and closing sessions."""

from __future__ import annotations

import asyncio

import pytest

from gateway import state
from gateway.protocol import Presence
from gateway.routes import PresenceWatch
from tests.gateway import fakes

pytestmark = pytest.mark.unit


class FakeRoutes:
    async def statuses(self, users: tuple[str, ...]) -> dict[str, str]:
        return dict.fromkeys(users, "offline")


def test_watchers_get_presence_events_until_they_unsubscribe_or_close() -> None:
    async def scenario() -> None:
        watch = PresenceWatch(FakeRoutes(), fakes.outbox())  # type: ignore[arg-type]
        a, b = fakes.session("alice"), fakes.session("carol")
        await watch.on_frame(a, Presence("presence_subscribe", ("bob", "dan"), "r1"))
        await watch.on_frame(b, Presence("presence_subscribe", ("bob",), None))
        assert fakes.ws_of(a).frames() == [
            {"op": "presence", "statuses": {"bob": "offline", "dan": "offline"}, "ref": "r1"}
        ]
        watch.on_event(state.PresenceEvent("bob", "online"))
        expected = {"op": "presence", "statuses": {"bob": "online"}}
        assert fakes.ws_of(a).frames()[-1] == fakes.ws_of(b).frames()[-1] == expected
        await watch.on_frame(a, Presence("presence_unsubscribe", ("bob",), "r2"))
        assert fakes.ws_of(a).frames()[-1] == {"op": "ok", "ref": "r2"}
        watch.forget(b)
        assert watch.watchers == {"dan": {a}}
        watch.forget(a)
        assert watch.watchers == {}

    asyncio.run(scenario())
