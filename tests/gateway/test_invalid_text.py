"""Invalid text (a lone UTF-16 surrogate, e.g. the JSON escape "\\ud83d" left after a JavaScript
client cut an emoji in half) is refused when the frame is parsed, with `invalid_text`
(docs/protocol.md 7.3), through the real stack: the session stays usable, nothing reaches Kafka
and no send failure is counted against Kafka."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.gateway.conftest import Im
from tests.gateway.protocol_client import dm
from tests.gateway.support import assert_increased

pytestmark = pytest.mark.integration

# Written by hand: json.dumps would escape the lone half the same way, but the test should show
# exactly what travels on the wire.
BAD_SEND = '{"op":"send","client_msg_id":"%s","to":"%s","body":"x\\ud83d"}'


def test_lone_surrogate_is_refused_at_parse_time_and_the_session_stays_usable(im: Im) -> None:
    http = im.stack.info.gateway_http_urls[0]
    alice, bob = im.uid("alice"), im.uid("bob")
    conv = dm(alice, bob)
    before = im.metrics(http)

    async def scenario() -> None:
        a = im.client(alice, gateway=0, auto_reconnect=False)
        b = im.client(bob, gateway=1, auto_reconnect=False)
        await a.connect()
        await b.connect()
        assert a.ws is not None
        await a.ws.send(BAD_SEND % ("bad-1", bob))
        await a.wait_until(lambda: bool(a.errors), 10, "the refusal")
        error = a.errors[-1]
        assert (error["code"], error["ref"]) == ("invalid_text", "bad-1")
        # Through the client's own send: refused for good, not resent (section 7.3).
        refused = await a.send("cut \ud83d", to=bob)
        await a.wait_until(lambda: refused in a.refused, 10, "the refused send")
        assert refused not in a.unacked
        # The same in a nested unknown field and in a sync cursor key, each with its own ref.
        await a.ws.send('{"op":"ping","ref":"p1","x":[{"k":"\\udc00"}]}')
        await a.ws.send('{"op":"sync","ref":"s1","cursors":{"dm:\\ud800:b":1}}')
        await a.wait_until(lambda: len(a.errors) == 4, 10, "two more refusals")
        assert [(e["code"], e.get("ref")) for e in a.errors[2:]] == [
            ("invalid_text", "p1"),
            ("invalid_text", "s1"),
        ]
        # An emoji (a surrogate pair, escaped) is valid text and goes through.
        emoji = "x\U0001f600"
        cmid = await a.send(emoji, to=bob)
        await a.wait_until(lambda: cmid in a.acks, 10, "the ack of the valid send")
        await b.wait_until(lambda: b.bodies(conv) == [emoji], 20, "delivery to bob")
        assert a.close_codes == []
        assert a.connected.is_set()
        reply = await a.request({"op": "ping"})
        assert reply["op"] == "pong"

    im.run(scenario)
    after = im.metrics(http)
    assert after['im_gateway_protocol_errors_total{code="invalid_text"}'] - before.get(
        'im_gateway_protocol_errors_total{code="invalid_text"}', 0
    ) == pytest.approx(4)
    assert_increased(before, after, ['im_gateway_frames_in_total{op="invalid"}'])
    # Not a Kafka failure: the SLO's availability is not charged for a client's bad text.
    kafka = 'im_gateway_messages_failed_total{reason="kafka"}'
    assert after[kafka] == before[kafka]


def test_lone_surrogate_in_hello_is_refused_before_the_token_is_read(im: Im) -> None:
    from websockets.asyncio.client import connect

    url = im.urls[0]

    async def scenario() -> None:
        ws = await connect(url)
        await ws.send('{"op":"hello","device_id":"d1","ref":"h1","token":"t\\ud83d"}')
        frame = json.loads(await ws.recv())
        assert (frame["op"], frame["code"], frame["ref"]) == ("error", "invalid_text", "h1")
        await ws.wait_closed()
        assert ws.close_code == 4000

    asyncio.run(scenario())
