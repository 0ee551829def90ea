"""Issue 15, lag during a broker outage, on the real stack: the dispatcher's lag gauge follows
the partitions' end offsets against the committed offsets, so a backlog shows while a batch is
retried; when Kafka itself is down the lag is unknown (NaN, im_dispatcher_lag_known 0),
never 0; once Kafka is back it is known again and drains to 0."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable

import pytest

from tests.gateway.conftest import Im
from tests.gateway.protocol_client import dm
from tests.gateway.support import injected_record, produce
from tests.support import wait_for

pytestmark = pytest.mark.integration

KNOWN = "im_dispatcher_lag_known"


def _lags(im: Im) -> tuple[list[float], float | None]:
    values = im.metrics(im.stack.info.dispatcher_url)
    lags = [v for k, v in values.items() if k.startswith("im_dispatcher_consumer_lag{")]
    return lags, values.get(KNOWN)


def test_lag_shows_the_backlog_and_is_unknown_not_zero_while_kafka_is_down(im: Im) -> None:
    stack, info = im.stack, im.stack.info
    alice, bob = im.uid("alice"), im.uid("bob")
    conv = dm(alice, bob)
    backlog = 30

    def lags_are(predicate: Callable[[list[float]], bool], *, known: bool = False) -> bool:
        lags, flag = _lags(im)
        return bool(lags) and predicate(lags) and (flag == 1 or not known)

    wait_for("a lag series", lambda: lags_are(lambda lags: True), timeout=30, interval=0.5)
    stack.stop("redis")  # the dispatcher retries its batch: nothing is committed
    try:
        region = info.regions[0].name
        records = [
            injected_record(region, conv, alice, to=bob, body=f"backlog #{i}", device="lag-test")
            for i in range(backlog)
        ]
        values = [(conv, json.dumps(r).encode()) for r in records]
        asyncio.run(produce(info.kafka_bootstrap, info.kafka_topic, values))
        wait_for(
            "the backlog in the lag",
            lambda: lags_are(lambda lags: sum(lags) >= backlog),
            timeout=30,
            interval=0.5,
        )
        stack.stop("kafka")
        started = time.monotonic()

        def unknown() -> bool:
            lags, known = _lags(im)
            return known == 0 and bool(lags) and all(math.isnan(v) for v in lags)

        wait_for("lag unknown", unknown, timeout=30, interval=0.5)
        # And it stays unknown for as long as Kafka is down: never a reassuring 0.
        while time.monotonic() - started < 15:
            lags, known = _lags(im)
            assert known == 0
            assert all(math.isnan(v) for v in lags), lags
            time.sleep(1)
    finally:
        stack.up()
    wait_for(
        "lag known and drained",
        lambda: lags_are(lambda lags: max(lags) == 0, known=True),
        timeout=120,
        interval=0.5,
    )
