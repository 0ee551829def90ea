"""docs/protocol.md and the gateway agree (issue 15 part 4), through the real stack and the client
written from the document (tests/gateway/protocol_client.py): every point a client written from
the document found ambiguous or wrong, as the document now settles it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.gateway.conftest import Im
from tests.gateway.protocol_client import dm

pytestmark = pytest.mark.integration

MAX_FRAME_BYTES = 65536  # the welcome frame says so; checked below


async def _frames_until(ws: ClientConnection, op: str, timeout: float = 10) -> list[str]:
    """Raw frames up to and including the first ``op`` frame."""
    raws: list[str] = []
    while True:
        raw = await asyncio.wait_for(ws.recv(), timeout)
        assert isinstance(raw, str)
        raws.append(raw)
        if json.loads(raw)["op"] == op:
            return raws


async def _session(im: Im, user: str, device: str = "raw") -> ClientConnection:
    ws = await connect(
        im.urls[0],
        additional_headers={"Authorization": f"Bearer {im.token(user)}"},
        max_size=2**20,
        compression=None,
    )
    await ws.send(json.dumps({"op": "hello", "device_id": device}))
    welcome = json.loads(await ws.recv())
    assert welcome["max_frame_bytes"] == MAX_FRAME_BYTES
    return ws


def test_label_values_are_listed_at_zero_and_refused_tokens_are_counted(im: Im) -> None:
    """9.2: the listed label values exist from the start; 1.1/9.2: the unauthorized and
    token_expired error frames count in im_gateway_protocol_errors_total."""
    http = im.stack.info.gateway_http_urls[0]
    before = im.metrics(http)
    for source in ("cache", "cassandra"):
        assert f'im_gateway_synced_messages_total{{source="{source}"}}' in before
    for code in ("unauthorized", "token_expired", "invalid_text", "unavailable", "too_many"):
        assert f'im_gateway_protocol_errors_total{{code="{code}"}}' in before
    user = im.uid("mallory")

    async def scenario() -> None:
        for token, code in [("garbage", "unauthorized"), (im.token(user, exp=1), "token_expired")]:
            ws = await connect(im.urls[0])
            await ws.send(json.dumps({"op": "hello", "device_id": "d1", "token": token}))
            frame = json.loads(await ws.recv())
            assert (frame["op"], frame["code"]) == ("error", code)
            await ws.wait_closed()

    asyncio.run(scenario())
    after = im.metrics(http)
    for code in ("unauthorized", "token_expired"):
        name = f'im_gateway_protocol_errors_total{{code="{code}"}}'
        assert after[name] - before[name] == 1


def test_a_token_missing_a_required_claim_gets_the_documented_reason(im: Im) -> None:
    """1.1: no iss -> bad_issuer, no aud -> bad_audience, no sub or exp -> malformed."""
    info = im.stack.info
    secret = info.jwt_secret_file.read_text().strip()
    now = int(time.time())
    full: dict[str, Any] = {
        "sub": im.uid("alice"),
        "iss": info.jwt_issuer,
        "aud": info.jwt_audience,
        "exp": now + 600,
    }
    expected = {"iss": "bad_issuer", "aud": "bad_audience", "sub": "malformed", "exp": "malformed"}

    async def scenario() -> None:
        for claim, reason in expected.items():
            claims = {k: v for k, v in full.items() if k != claim}
            token = jwt.encode(claims, secret, algorithm="HS256")
            ws = await connect(im.urls[0])
            await ws.send(json.dumps({"op": "hello", "device_id": "d1", "token": token}))
            frame = json.loads(await ws.recv())
            assert (frame["code"], frame["message"]) == ("unauthorized", reason), claim
            await ws.wait_closed()
            assert ws.close_code == 4001

    asyncio.run(scenario())


def test_complete_is_true_for_exactly_limit_messages_and_false_when_more_remain(im: Im) -> None:
    """4: complete false only when messages after last_seq were cut off by the limit."""
    alice, bob = im.uid("alice"), im.uid("bob")
    conv = dm(alice, bob)

    async def scenario() -> None:
        a = im.client(alice, gateway=0)
        await a.connect()
        for i in range(5):
            await a.send(f"m{i}", to=bob)
        await a.wait_until(lambda: len(a.bodies(conv)) == 5, 20, "5 messages persisted")
        for limit, last, complete in ((5, 5, True), (4, 4, False), (6, 5, True)):
            reply = await a.request({"op": "sync", "cursors": {conv: 0}, "limit": limit})
            assert reply["op"] == "sync_done"
            assert reply["conversations"][conv] == {"last_seq": last, "complete": complete}

    im.run(scenario)


def test_sync_batches_fit_max_frame_bytes_and_arrive_in_order(im: Im) -> None:
    """2/4: server frames: a sync of large messages comes as several sync_batch frames, each
    within max_frame_bytes, in seq order; the client written from the document reads them."""
    alice, bob = im.uid("alice"), im.uid("bob")
    conv = dm(alice, bob)
    body = "x" * 25000  # two such messages fit one frame, three do not

    async def scenario() -> None:
        a = im.client(alice, gateway=0)
        await a.connect()
        for _ in range(6):
            await a.send(body, to=bob)
        await a.wait_until(lambda: len(a.bodies(conv)) == 6, 30, "6 large messages")
        ws = await _session(im, bob)
        await ws.send(json.dumps({"op": "sync", "cursors": {}, "ref": "s"}))
        raws = await _frames_until(ws, "sync_done")
        batches = [json.loads(r) for r in raws if json.loads(r)["op"] == "sync_batch"]
        assert len(batches) == 3  # two messages each; unsplit it would be one 150 KB frame
        assert all(len(r.encode()) <= MAX_FRAME_BYTES for r in raws[:-1])
        assert sum(len(r.encode()) for r in raws[:-1]) > 2 * MAX_FRAME_BYTES
        assert [m["seq"] for b in batches for m in b["messages"]] == list(range(1, 7))
        await ws.close()
        b = im.client(bob, "d2", gateway=1)
        await b.connect()  # the reference client, syncing at hello
        assert len(b.bodies(conv)) == 6

    im.run(scenario)


def test_group_create_lists_at_most_200_members(im: Im) -> None:
    """3.5: 200 listed members besides the creator; 201 is too_many and creates nothing."""
    owner = im.uid("owner")

    async def scenario() -> None:
        a = im.client(owner, gateway=0)
        await a.connect()
        members = [im.uid(f"m{i}") for i in range(201)]
        too_many = await a.request(
            {"op": "group_create", "group_id": im.uid("big"), "members": members}
        )
        assert (too_many["op"], too_many["code"]) == ("error", "too_many")
        missing = await a.request({"op": "group_join", "group_id": im.uid("big")})
        assert missing["code"] == "not_found"  # nothing was created
        made = await a.request(
            {"op": "group_create", "group_id": im.uid("big"), "members": members[:200]}
        )
        assert made["op"] == "group"
        assert len(made["members"]) == 201

    im.run(scenario)


def test_only_malformed_frames_count_toward_the_close_and_the_last_gets_its_error(im: Im) -> None:
    """7.2: refusals about state do not count; the 21st malformed frame is answered, then 4000."""
    user = im.uid("clumsy")

    async def scenario() -> None:
        ws = await _session(im, user)
        for i in range(25):  # answers about state: never a reason to close
            await ws.send(json.dumps({"op": "group_join", "group_id": im.uid(f"none{i}")}))
            assert json.loads(await ws.recv())["code"] == "not_found"
        for _ in range(20):
            await ws.send("{nope")
            assert json.loads(await ws.recv())["code"] == "bad_json"
        await ws.send(json.dumps({"op": "ping", "ref": "alive"}))
        assert json.loads(await ws.recv())["op"] == "pong"
        await ws.send('{"op":"ping","x":"\\ud800"}')
        last = json.loads(await ws.recv())
        assert last["code"] == "invalid_text"  # the 21st: answered, then closed
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4000

    asyncio.run(scenario())
