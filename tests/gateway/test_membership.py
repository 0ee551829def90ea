"""Issue 15, membership at sync time, on the real stack: a member who left a group reads
nothing of it any more (not on a fresh device, not with an explicit cursor, not through an index
entry a record in flight put back), while a member still syncs the whole history."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from tests.gateway.conftest import Im
from tests.gateway.protocol_client import ProtocolClient

pytestmark = pytest.mark.integration


async def _synced(client: ProtocolClient, cursors: dict[str, int]) -> dict[str, object]:
    """The sync_done answering an explicit sync with ``cursors``."""
    return await client.request({"op": "sync", "cursors": cursors})


def test_a_leaver_syncs_nothing_of_the_group_and_a_member_still_does(im: Im) -> None:
    alice, bob, carol = im.uid("alice"), im.uid("bob"), im.uid("carol")
    group = im.uid("club")
    conv = f"g:{group}"

    async def scenario() -> None:
        a, b, c = im.client(alice, gateway=0), im.client(bob, gateway=1), im.client(carol)
        for client in (a, b, c):
            await client.connect()
        created = await a.request({"op": "group_create", "group_id": group, "members": [bob]})
        assert created["members"] == sorted([alice, bob])
        joined = await c.request({"op": "group_join", "group_id": group})
        assert carol in joined["members"]
        await a.send("before the leave", group=group)
        await c.wait_until(lambda: c.bodies(conv) == ["before the leave"], 15, "first")
        left = await c.request({"op": "group_leave", "group_id": group})
        assert carol not in left["members"]
        await c.close()
        await a.send("after the leave", group=group)
        await b.wait_until(lambda: len(b.bodies(conv)) == 2, 15, "second, at a member")

        # A new device of the leaver: its connect-time sync has nothing of the group.
        c2 = im.client(carol, "tablet", gateway=1)
        await c2.connect()
        assert c2.bodies(conv) == []
        # Asking for the group explicitly gets nothing either (section 3.3: ignored).
        done = await _synced(c2, {conv: 0})
        assert done["op"] == "sync_done"
        assert conv not in done["conversations"]  # type: ignore[operator]
        # An index entry put back behind the leave (the dispatcher indexes the members it read
        # for a record in flight) does not make the group readable.
        r = aioredis.from_url(
            im.stack.info.redis_url, decode_responses=True, **im.stack.redis_kwargs()
        )
        try:
            await r.sadd(f"im:uc:{carol}", conv)
        finally:
            await r.aclose()
        done = await _synced(c2, {conv: 0})
        assert conv not in done["conversations"]  # type: ignore[operator]
        assert c2.bodies(conv) == []
        await asyncio.sleep(1.0)  # nothing live either
        assert c2.bodies(conv) == []

        # A member's new device still gets the whole history.
        b2 = im.client(bob, "laptop", gateway=0)
        await b2.connect()
        await b2.wait_until(lambda: len(b2.bodies(conv)) == 2, 15, "history at a member")
        assert b2.bodies(conv) == ["before the leave", "after the leave"]
        done = await _synced(b2, {conv: 0})
        assert done["conversations"][conv]["last_seq"] == 2  # type: ignore[index]

    im.run(scenario)
