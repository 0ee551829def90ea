"""End to end through the real stack (two gateways, Kafka, dispatcher, Cassandra, Redis), driven
by the client written from docs/protocol.md."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.gateway.conftest import Im
from tests.gateway.protocol_client import dm
from tests.gateway.support import assert_increased

pytestmark = pytest.mark.integration


def run(im: Im, scenario: object) -> None:
    async def wrapper() -> None:
        try:
            await scenario  # type: ignore[misc]
        finally:
            await im.close_all()

    asyncio.run(wrapper())


def test_one_to_one_across_gateways_in_order_with_acks_and_receipts(im: Im) -> None:
    alice, bob = im.uid("alice"), im.uid("bob")

    async def scenario() -> None:
        a = im.client(alice, gateway=0)
        b = im.client(bob, gateway=1)
        await a.connect()
        await b.connect()
        assert (a.node_id, b.node_id) == ("gw-1", "gw-2")
        conv = dm(alice, bob)
        sent = [f"m{i}" for i in range(30)]
        cmids = [await a.send(body, to=bob) for body in sent]
        await b.wait_until(lambda: len(b.bodies(conv)) == 30, 20, "30 messages at bob")
        assert b.bodies(conv) == sent  # per-conversation order = send order
        assert sorted(seq for c, seq in b.messages if c == conv) == list(range(1, 31))
        await a.wait_until(lambda: all(c in a.acks for c in cmids), 10, "acks")
        assert {a.acks[c]["conversation_id"] for c in cmids} == {conv}
        # The sender's own device gets its messages back with their seqs (section 5.1).
        await a.wait_until(lambda: len(a.bodies(conv)) == 30, 10, "echo at alice")
        assert b.duplicates_on_one_connection() == []
        await b.receipt(conv, 30, "read")
        await a.wait_until(lambda: a.receipts, 10, "receipt at alice")
        receipt = a.receipts[-1]
        got = (receipt["user_id"], receipt["device_id"], receipt["seq"], receipt["kind"])
        assert got == (bob, "d1", 30, "read")

    run(im, scenario())


def test_resend_is_acked_again_but_delivered_once(im: Im) -> None:
    alice, bob = im.uid("alice"), im.uid("bob")

    async def scenario() -> None:
        a, b = im.client(alice, gateway=0), im.client(bob, gateway=1)
        await a.connect()
        await b.connect()
        frame = {"op": "send", "client_msg_id": "fixed-id-1", "to": bob, "body": "once"}
        first = await a.request(frame)
        second = await a.request(frame)
        assert first["op"] == second["op"] == "ack"
        for key in ("message_id", "conversation_id", "accepted_at"):
            assert first[key] == second[key]
        other = await a.request({**frame, "to": im.uid("carol")})
        assert (other["op"], other["code"]) == ("error", "duplicate_id")
        await a.send("after", to=bob)
        conv = dm(alice, bob)
        await b.wait_until(lambda: b.bodies(conv) == ["once", "after"], 10, "both messages")
        await asyncio.sleep(1.0)
        assert b.bodies(conv) == ["once", "after"]
        assert len(b.by_message_id[first["message_id"]]) == 1

    run(im, scenario())


def test_group_messages_reach_every_member_device(im: Im) -> None:
    alice, bob, carol = im.uid("alice"), im.uid("bob"), im.uid("carol")
    group = im.uid("team")

    async def scenario() -> None:
        a = im.client(alice, gateway=0)
        b1, b2 = im.client(bob, "phone", gateway=1), im.client(bob, "laptop", gateway=0)
        c = im.client(carol, gateway=1)
        for client in (a, b1, b2, c):
            await client.connect()
        created = await a.request({"op": "group_create", "group_id": group, "members": [bob]})
        assert created["members"] == sorted([alice, bob])
        again = await a.request({"op": "group_create", "group_id": group, "members": []})
        assert again["code"] == "group_exists"
        refused = await c.request(
            {"op": "send", "client_msg_id": "x", "group_id": group, "body": "let me in"}
        )
        assert refused["code"] == "not_member"
        joined = await c.request({"op": "group_join", "group_id": group})
        assert carol in joined["members"]
        await a.send("hello team", group=group)
        await b1.send("hi from bob", group=group)
        conv = f"g:{group}"
        for client in (a, b1, b2, c):
            await client.wait_until(lambda cl=client: len(cl.bodies(conv)) == 2, 15, "group")
            assert set(client.bodies(conv)) == {"hello team", "hi from bob"}
        orders = {tuple(cl.bodies(conv)) for cl in (a, b1, b2, c)}
        assert len(orders) == 1  # everybody sees the same order
        left = await c.request({"op": "group_leave", "group_id": group})
        assert carol not in left["members"]

    run(im, scenario())


def test_offline_sync_then_live_without_gap_or_duplicate(im: Im) -> None:
    alice, bob = im.uid("alice"), im.uid("bob")

    async def scenario() -> None:
        a = im.client(alice, gateway=0)
        await a.connect()
        b = im.client(bob, gateway=1)
        await b.connect()
        conv = dm(alice, bob)
        for i in range(5):
            await a.send(f"early{i}", to=bob)
        await b.wait_until(lambda: len(b.bodies(conv)) == 5, 15, "first five")
        await b.close()
        # Bob is offline: these must come by sync, then live ones continue the sequence.
        for i in range(250):
            await a.send(f"offline{i}", to=bob)
        await a.wait_until(lambda: len(a.acks) == 255, 20, "acks")
        b2 = im.client(bob, gateway=0)
        b2.conversations = b.conversations  # the device's stored cursors (section 5.4)
        b2.messages = dict(b.messages)
        sender = asyncio.create_task(_send_many(a, bob, "live", 50))
        await b2.connect()
        await sender
        expected = [f"early{i}" for i in range(5)] + [f"offline{i}" for i in range(250)]
        expected += [f"live{i}" for i in range(50)]
        await b2.wait_until(lambda: len(b2.bodies(conv)) == 305, 30, "sync + live")
        # Rate-limited sends were resent later, so compare contents, and check the seqs.
        assert sorted(b2.bodies(conv)) == sorted(expected)
        assert sorted(seq for c, seq in b2.messages if c == conv) == list(range(1, 306))
        assert b2.conversations[conv].cursor == 305
        assert b2.duplicates_on_one_connection() == []
        syncs = [f for f in b2.frames if f["op"] == "sync_batch"]
        synced = [m["seq"] for f in syncs for m in f["messages"]]
        live = [f["seq"] for f in b2.frames if f["op"] == "message"]
        assert synced
        assert synced[0] == 6
        assert not set(synced) & set(live)  # never the same seq both ways on one session

    run(im, scenario())


async def _send_many(client: object, to: str, prefix: str, count: int) -> None:
    for i in range(count):
        await client.send(f"{prefix}{i}", to=to)  # type: ignore[attr-defined]
        await asyncio.sleep(0.005)


def test_presence_subscribe_and_query(im: Im) -> None:
    alice, bob = im.uid("alice"), im.uid("bob")

    async def scenario() -> None:
        a = im.client(alice, gateway=0)
        await a.connect()
        reply = await a.request({"op": "presence_subscribe", "users": [bob]})
        assert reply["statuses"] == {bob: "offline"}
        b = im.client(bob, gateway=1, auto_reconnect=False)
        await b.connect()
        await a.wait_until(lambda: a.presence.get(bob) == "online", 10, "bob online")
        await b.close()
        await a.wait_until(lambda: a.presence.get(bob) == "offline", 10, "bob offline")
        query = await a.request({"op": "presence_query", "users": [alice, bob]})
        assert query["statuses"] == {alice: "online", bob: "offline"}

    run(im, scenario())


def test_bad_frames_get_error_frames_and_are_counted(im: Im) -> None:
    http, url = im.stack.info.gateway_http_urls[0], im.urls[0]
    before = im.metrics(http)

    async def scenario() -> None:
        ws = await _hello(url, im.token(im.uid("mallory")), "d1")
        cases = [
            ("{nope", "bad_json"),
            ('{"op":"fly"}', "unknown_op"),
            ('{"op":"send","to":"x"}', "bad_frame"),
            ("[]", "bad_frame"),
        ]
        for raw, code in cases:
            await ws.send(raw)
            frame = json.loads(await ws.recv())
            assert (frame["op"], frame["code"]) == ("error", code)
        await ws.send(json.dumps({"op": "ping", "ref": 7}))
        pong = json.loads(await ws.recv())
        assert (pong["op"], pong["ref"]) == ("pong", "7")
        await ws.close()

    asyncio.run(scenario())
    assert_increased(
        before,
        im.metrics(http),
        [
            'im_gateway_protocol_errors_total{code="bad_json"}',
            'im_gateway_protocol_errors_total{code="unknown_op"}',
            'im_gateway_protocol_errors_total{code="bad_frame"}',
            'im_gateway_frames_in_total{op="invalid"}',
        ],
    )


def test_flood_oversize_bad_tokens_and_rude_clients_are_closed(im: Im) -> None:
    http, url = im.stack.info.gateway_http_urls[0], im.urls[0]
    user = im.uid("mallory")
    before = im.metrics(http)

    async def scenario() -> None:
        flood = await _hello(url, im.token(user), "d1")
        for _ in range(400):
            try:
                await flood.send(json.dumps({"op": "ping"}))
            except ConnectionClosed:
                break
        assert "rate_limited" in await _drain_codes(flood)
        assert flood.close_code == 4004
        big = await _hello(url, im.token(user), "d2")
        await big.send("x" * 70000)
        assert await _drain_codes(big) == []
        assert big.close_code == 1009
        for token, close in [("garbage", 4001), (im.token(user, exp=1), 4002)]:
            bad = await connect(url)
            await bad.send(json.dumps({"op": "hello", "device_id": "d3", "token": token}))
            assert await _drain_codes(bad) == ["token_expired" if close == 4002 else "unauthorized"]
            assert bad.close_code == close
        rude = await connect(url)
        await rude.send(json.dumps({"op": "ping"}))
        assert await _drain_codes(rude) == ["not_authenticated"]
        assert rude.close_code == 4000
        # Everybody else is unaffected.
        ok = await _hello(url, im.token(im.uid("other")), "d1")
        await ok.send(json.dumps({"op": "ping"}))
        assert json.loads(await ok.recv())["op"] == "pong"
        await ok.close()

    asyncio.run(scenario())
    assert_increased(
        before,
        im.metrics(http),
        [
            'im_gateway_protocol_errors_total{code="rate_limited"}',
            'im_gateway_auth_failures_total{reason="malformed"}',
            'im_gateway_auth_failures_total{reason="expired"}',
            'im_gateway_disconnects_total{reason="rate_limited"}',
            'im_gateway_disconnects_total{reason="frame_too_big"}',
            'im_gateway_connects_total{reason="auth_failed"}',
            'im_gateway_connects_total{reason="protocol_error"}',
        ],
    )


async def _hello(url: str, token: str, device: str):  # type: ignore[no-untyped-def]
    ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"})
    await ws.send(json.dumps({"op": "hello", "device_id": device}))
    assert json.loads(await ws.recv())["op"] == "welcome"
    return ws


async def _drain_codes(ws) -> list[str]:  # type: ignore[no-untyped-def]
    codes = []
    try:
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if frame["op"] == "error":
                codes.append(frame["code"])
    except ConnectionClosed:
        pass
    return codes


def test_health_ready_metrics_and_404(im: Im) -> None:
    for base in im.stack.info.gateway_http_urls:
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert (ready.status_code, ready.text.strip()) == (200, "ready")
        assert httpx.get(f"{base}/nope", timeout=5).status_code == 404
        metrics = im.metrics(base)
        for name in (
            "im_gateway_connections_active",
            "im_gateway_draining",
            "im_gateway_delivery_latency_seconds_count",
        ):
            assert name in metrics
        limit = int(im.stack.imgw_env().get("IMGW_MAX_CONNECTIONS", "50000"))
        assert metrics["im_gateway_connections_limit"] == limit
    dispatcher = im.stack.info.dispatcher_url
    assert httpx.get(f"{dispatcher}/readyz", timeout=5).status_code == 200
    assert "im_dispatcher_consumed_total" in im.metrics(dispatcher)

    async def refused_upgrade() -> None:
        with pytest.raises(InvalidStatus):
            await connect(im.stack.info.dispatcher_url.replace("http", "ws") + "/ws")

    asyncio.run(refused_upgrade())
