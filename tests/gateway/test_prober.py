"""The conflict prober and the relay's replication lag on the real multi-region stack (staging,
the session's ``multi_region_stack``: two regions, MirrorMaker 2, a Cassandra DC per region
plus the witness), docs/multi-region.md sections 6 and 8.

The prober runs in every region's relay over the conversations it relays: a conversation homed
in us-east is probed by eu-central's relay, which reads every DC's copy on its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest

from gateway.prober import conflicting
from opsctl.local import LocalStack
from opsctl.prometheus import Prometheus
from tests.gateway.protocol_client import ProtocolClient, make_token
from tests.gateway.test_fencing import metrics
from tests.opsctl.region.conftest import REGIONS, RegionCql, convs_homed
from tests.support import wait_for

pytestmark = pytest.mark.integration

EU, US = REGIONS
CONFLICTS = "im_prober_conflicts_total"
CHECKED = "im_prober_checked_total"
LAST_RUN = "im_prober_last_run_timestamp_seconds"


def _relay(stack: LocalStack, region: str) -> str:
    return stack.component(f"{region}/relay").endpoint


def _lag(stack: LocalStack, region: str, source: str) -> float:
    series = f'im_relay_replication_lag_seconds{{source="{source}",target="{region}"}}'
    return metrics(_relay(stack, region))[series]


def _send(stack: LocalStack, conv: str, region: str, count: int) -> list[str]:
    """``count`` messages from the DM's first user through ``region``'s gateway; their ids."""
    info = stack.info
    sender, to = conv.split(":")[1:]

    def token() -> str:
        return make_token(
            info.jwt_secret_file, sender, issuer=info.jwt_issuer, audience=info.jwt_audience
        )

    async def run() -> list[str]:
        url = info.region(region).gateway_ws_urls[0]
        client = ProtocolClient([url], sender, "d1", token)
        await client.connect(sync=False)
        try:
            cmids = [await client.send(f"probe {n}", to=to) for n in range(count)]
            await client.wait_until(lambda: not client.unacked, 60, "every send acked")
            return [client.acks[c]["message_id"] for c in cmids]
        finally:
            await client.close()

    return asyncio.run(run())


def test_conflicting_counts_seqs_claimed_by_two_ids() -> None:
    claims = [(1, "m1"), (1, "m1"), (2, "m2"), (2, "x"), (3, "m3")]
    assert conflicting(claims) == (3, {2: {"m2", "x"}})
    assert conflicting([]) == (0, {})


def test_a_run_probes_what_was_relayed_since_the_last_one_plus_a_turn_of_the_sample() -> None:
    from gateway.metrics import ProberMetrics
    from gateway.prober import ROTATION, SAMPLE_SIZE, Prober

    prober = Prober(None, ProberMetrics())  # type: ignore[arg-type]  # no store: no probe
    prober.note(f"c{i}" for i in range(SAMPLE_SIZE + 10))
    first = prober.next_batch()
    assert set(first) == {f"c{i}" for i in range(10, SAMPLE_SIZE + 10)}, "touched, in sample"
    turns = [prober.next_batch() for _ in range(SAMPLE_SIZE // ROTATION)]
    assert all(len(t) == ROTATION for t in turns)
    assert {c for t in turns for c in t} == set(prober.sample), "a full turn covers the sample"
    prober.note(["new"])
    assert "new" in prober.next_batch()


def test_the_prober_finds_no_conflict_in_clean_traffic_and_counts_an_injected_one_once(
    multi_region_stack: LocalStack,
) -> None:
    stack = multi_region_stack
    (conv,) = convs_homed(US, 1, f"probe{uuid.uuid4().hex[:6]}")
    eu_relay = _relay(stack, EU)
    before = metrics(eu_relay)
    mids = _send(stack, conv, EU, 3)
    cql = RegionCql(stack, stack.info.region(US))
    try:
        wait_for(
            "sequenced", lambda: set(cql.message_seqs(conv)) >= set(mids), timeout=60, interval=0.5
        )
        # A clean run: eu-central's relay applied the messages (homed in us-east), its prober
        # compared every DC's copy of them and found nothing.
        started = time.time()

        def probed() -> dict[str, float] | None:
            now = metrics(eu_relay)
            fresh = now[LAST_RUN] > started and now[CHECKED] >= before[CHECKED] + len(mids)
            return now if fresh else None

        clean = wait_for("a probe run over the new messages", probed, timeout=60, interval=0.5)
        assert clean is not None
        assert clean[CONFLICTS] == before[CONFLICTS] == 0
        assert metrics(_relay(stack, US))[CONFLICTS] == 0
        assert all(
            v == 0 for k, v in clean.items() if k.startswith("im_prober_read_failures_total")
        )

        # Inject a conflict: a second message id for seq 2, written into us-east's DC (it
        # replicates to the others like any write).
        seqs = cql.message_seqs(conv)
        bucket = cql.session.execute(
            "SELECT bucket FROM message_seqs WHERE conversation_id = %s AND message_id = %s",
            (conv, mids[1]),
        ).one()
        assert seqs[mids[1]] == 2
        intruder = "f" * 32
        cql.session.execute(
            "INSERT INTO message_seqs (conversation_id, message_id, seq, bucket) "
            "VALUES (%s, %s, %s, %s)",
            (conv, intruder, 2, bucket.bucket),
        )
        found = wait_for(
            "the conflict counted",
            lambda: metrics(eu_relay)[CONFLICTS] >= 1,
            timeout=60,
            interval=0.5,
        )
        assert found
        # The stack's Prometheus scrapes the relay and evaluates alerts/rules: it pages.
        firing = 'ALERTS{alertname="ImCrossRegionConflict",alertstate="firing"}'
        with Prometheus(stack.info.prometheus_url) as prometheus:
            paged = wait_for(
                "ImCrossRegionConflict firing",
                lambda: prometheus.query(firing),
                timeout=60,
                interval=1,
            )
        assert paged[0]["metric"]["severity"] == "page"
        # Counted once, however often it is seen again.
        seen = metrics(eu_relay)[LAST_RUN]
        wait_for("two more runs", lambda: metrics(eu_relay)[LAST_RUN] > seen + 5, timeout=30)
        assert metrics(eu_relay)[CONFLICTS] == 1
        assert "conflict: " in "\n".join(stack.tail(f"{EU}/relay", 200))
    finally:
        # The session's other tests expect no conflict: remove it and restart the relay (its
        # counter starts at 0 again).
        cql.session.execute(
            "DELETE FROM message_seqs WHERE conversation_id = %s AND message_id = %s",
            (conv, "f" * 32),
        )
        cql.close()
        stack.restart(f"{EU}/relay")


def test_the_replication_lag_grows_while_mirrormaker_is_frozen(
    multi_region_stack: LocalStack,
) -> None:
    stack = multi_region_stack
    wait_for("beacons flowing", lambda: _lag(stack, EU, US) < 10, timeout=120, interval=1)
    newest = f'im_relay_last_beacon_timestamp_seconds{{source="{US}",target="{EU}"}}'
    pid = stack.pid("mirrormaker")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3)  # what was in flight arrives
        first = _lag(stack, EU, US)
        beacon = metrics(_relay(stack, EU))[newest]
        time.sleep(5)
        later = _lag(stack, EU, US)
        assert later >= first + 4, f"lag {first} -> {later} while no beacon can arrive"
        assert metrics(_relay(stack, EU))[newest] == beacon
        assert later == pytest.approx(time.time() - beacon, abs=2)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for("the lag falls again", lambda: _lag(stack, EU, US) < 10, timeout=120, interval=1)
