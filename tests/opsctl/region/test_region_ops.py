"""opsctl region evacuate|restore on the real multi-region stack (staging, the session's
``multi_region_stack``): a planned evacuation under load, an interrupted and a crashed one
resumed, bad input refused before anything changes, and an unplanned failover from a frozen
region. Each test leaves the stack with its original homes (``home_again``)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from opsctl.local import LocalStack
from tests.gateway.protocol_client import Conversation, ProtocolClient, make_token
from tests.opsctl.region.conftest import (
    REGIONS,
    STACK,
    RegionCql,
    clean_env,
    convs_homed,
    map_view,
    original_share,
    parse,
    region_command,
    region_cql,
    run_region,
    signal_region,
)
from tests.support import OpsctlRunner, wait_for

pytestmark = pytest.mark.integration

EU, US = REGIONS


def _token(stack: LocalStack, user: str) -> Callable[[], str]:
    info = stack.info

    def make() -> str:
        return make_token(
            info.jwt_secret_file, user, issuer=info.jwt_issuer, audience=info.jwt_audience
        )

    return make


def _ws(stack: LocalStack, region: str) -> str:
    return stack.info.region(region).gateway_ws_urls[0]


@dataclass
class Senders:
    """One sender per conversation (the DM's first user), each connected to a region's gateway
    and allowed to reconnect to any region's."""

    stack: LocalStack
    convs: list[str]
    clients: dict[str, ProtocolClient] = field(default_factory=dict)
    sent: dict[str, list[str]] = field(default_factory=dict)  # conv -> client_msg_ids

    async def connect(self, region_of: Callable[[int], str]) -> None:
        every = [_ws(self.stack, r) for r in REGIONS]
        for i, conv in enumerate(self.convs):
            sender = conv.split(":")[1]
            client = ProtocolClient(every, sender, "d1", _token(self.stack, sender))
            await client.connect(_ws(self.stack, region_of(i)), sync=False)
            self.clients[conv] = client
            self.sent[conv] = []

    async def send_round(self, tag: str) -> None:
        for conv, client in self.clients.items():
            to = conv.split(":")[2]
            self.sent[conv].append(await client.send(f"{tag} {uuid.uuid4().hex[:6]}", to=to))

    def rounds_from(self, region: str, rounds: int, tag: str) -> None:
        """Connect every sender to ``region``, send ``rounds`` rounds, wait for every ack."""

        async def send() -> None:
            await self.connect(lambda i: region)
            for n in range(rounds):
                await self.send_round(f"{tag} {n}")
            await self.all_acked()
            await self.close()

        asyncio.run(send())

    async def load(self, stop: asyncio.Event, interval: float = 0.2) -> int:
        rounds = 0
        while not stop.is_set():
            await self.send_round(f"load {rounds}")
            rounds += 1
            await asyncio.sleep(interval)
        return rounds

    async def all_acked(self, timeout: float = 90) -> None:
        for client in self.clients.values():
            await client.wait_until(lambda c=client: not c.unacked, timeout, "every send acked")

    def acked(self, conv: str) -> set[str]:
        client = self.clients[conv]
        return {client.acks[cmid]["message_id"] for cmid in self.sent[conv]}

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


def _check_conversations(cql: RegionCql, senders: Senders) -> dict[str, int]:
    """Every acked message has exactly one seq and one row, no seq names two messages, and
    every hole is an announced in-doubt range; conv -> highest seq."""
    highest = {}
    for conv in senders.convs:
        acked = senders.acked(conv)
        _wait_sequenced(cql, conv, acked, "every acked message sequenced")
        top, _gaps = cql.check(conv, acked)
        assert len(cql.message_seqs(conv)) == len(acked), f"{conv}: a message nobody acked"
        highest[conv] = top
    return highest


async def _device_view(stack: LocalStack, region: str, conv: str) -> ProtocolClient:
    """A new device of the conversation's second user: syncs the conversation from seq 0."""
    user = conv.split(":")[2]
    device = f"fresh-{uuid.uuid4().hex[:4]}"
    client = ProtocolClient([_ws(stack, region)], user, device, _token(stack, user))
    client.conversations[conv] = Conversation()
    await client.connect()
    return client


def _wait_sequenced(cql: RegionCql, conv: str, mids: set[str], what: str) -> None:
    def done() -> bool:
        return set(cql.message_seqs(conv)) >= mids

    wait_for(f"{conv}: {what}", done, timeout=90, interval=0.5)


def _fence_writer(cql: RegionCql, conv: str) -> str:
    row = cql.session.execute(
        "SELECT writer FROM conversation_seq WHERE conversation_id = %s", (conv,)
    ).one()
    return str(row.writer)


def _restore_and_send(stack: LocalStack, convs: list[str]) -> None:
    """restore: the homes come back, the gateway serves again, eu-central sequences again."""
    restored = run_region(stack, "restore", EU)
    assert restored.exit_code == 0, restored.stderr
    assert restored.data is not None
    assert restored.data["complete"] is True
    assert restored.data["home_share"] == original_share(4)
    assert restored.data["gateways"][0]["action"] == "started"
    assert stack.pid(f"{EU}/gw-1") is not None
    again = Senders(stack, convs)

    async def after() -> None:
        await again.connect(lambda i: EU)
        await again.send_round("after restore")
        await again.all_acked()
        await again.close()

    asyncio.run(after())
    cql = RegionCql(stack, stack.info.region(EU))
    try:
        for conv in convs:
            mids = again.acked(conv)
            _wait_sequenced(cql, conv, mids, "sequenced after restore")
            assert _fence_writer(cql, conv).startswith(f"{EU}:"), conv
    finally:
        cql.close()


async def _evacuate_under_load(stack: LocalStack, senders: Senders) -> dict[str, Any]:
    """Senders keep sending (half of them connected to eu-central, whose drain moves them)
    while ``opsctl region evacuate eu-central`` runs as a process of its own."""
    result: dict[str, Any] = {}
    await senders.connect(lambda i: EU if i % 2 == 0 else US)
    stop = asyncio.Event()
    load = asyncio.create_task(senders.load(stop))
    await asyncio.sleep(2)
    proc = await asyncio.create_subprocess_exec(
        *region_command(stack, "evacuate", EU),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    out, err = await proc.communicate()
    result.update(code=proc.returncode, data=parse(out.decode()), stderr=err.decode())
    await asyncio.sleep(2)  # the load continues on the new homes
    stop.set()
    result["rounds"] = await load
    await senders.all_acked()
    drained = [c for i, c in enumerate(senders.clients.values()) if i % 2 == 0]
    result["reconnect_frames"] = sum(len(c.reconnect_frames) for c in drained)
    await senders.close()
    return result


async def _devices_see_every_message_once(
    stack: LocalStack, senders: Senders, highest: dict[str, int]
) -> None:
    """What a new device sees: each conversation contiguous up to its last seq (announced
    gaps skipped), every acked message exactly once."""
    for conv in senders.convs:
        client = await _device_view(stack, US, conv)
        try:
            await client.wait_until(
                lambda c=client, conv=conv: c.conversations[conv].cursor == highest[conv],
                30,
                f"{conv} synced to seq {highest[conv]}",
            )
            ids = [m["message_id"] for (c, _), m in client.messages.items() if c == conv]
            assert sorted(ids) == sorted(senders.acked(conv)), conv
        finally:
            await client.close()


# ---- a planned evacuation under load, then restore ----------------------------------------


def test_a_planned_evacuation_under_load_loses_and_doubles_nothing(
    home_again: LocalStack,
) -> None:
    stack = home_again
    before = map_view(stack)
    assert before.home_share == original_share()
    tag = uuid.uuid4().hex[:6]
    convs = convs_homed(EU, 6, tag) + convs_homed(US, 2, tag)
    senders = Senders(stack, convs)
    result = asyncio.run(_evacuate_under_load(stack, senders))
    assert result["code"] == 0, result["stderr"]
    data = result["data"]
    assert isinstance(data, dict)
    print(
        f"evacuated {EU} under load: {data['shards_moved']} shards in {data['duration_s']} s, "
        f"{data['batches']} batches, gateways {data['gateways']}, {result['rounds']} rounds of "
        f"{len(convs)} sends, reconciled {data['reconciled']}"
    )
    assert data["complete"] is True
    assert data["shards_moved"] == data["shards_planned"] == round(4096 * original_share()[EU])
    assert data["left"] == {
        "shards_homed_in_region": 0,
        "gateways_serving": [],
        "shards_draining": 0,
        "held_records": 0,
    }
    assert data["home_share"] == {EU: 0.0, US: 1.0}
    (gateway,) = data["gateways"]
    assert gateway["name"] == f"{EU}/gw-1"
    assert gateway["action"] == "drained"
    assert gateway["sessions"] >= 3  # the senders connected there
    assert result["reconnect_frames"] >= 3  # each was told to reconnect elsewhere
    assert map_view(stack).home_share == {EU: 0.0, US: 1.0}

    cql = RegionCql(stack, stack.info.region(US))
    try:
        highest = _check_conversations(cql, senders)
        for conv in convs:
            assert _fence_writer(cql, conv).startswith(f"{US}:"), conv
    finally:
        cql.close()

    asyncio.run(_devices_see_every_message_once(stack, senders, highest))

    _restore_and_send(stack, convs[:6])


# ---- interrupted, crashed, resumed; bad input ----------------------------------------------


def _start(stack: LocalStack, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        region_command(stack, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )


def _wait_line(proc: subprocess.Popen[str], words: str, timeout: float = 120) -> list[str]:
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if words in line:
            return lines
    raise AssertionError(f"never printed {words!r}: {''.join(lines)}")


def test_an_interrupted_evacuation_reports_what_is_left_and_a_rerun_resumes(
    home_again: LocalStack, opsctl: OpsctlRunner, tmp_path: Path
) -> None:
    stack = home_again
    total = round(4096 * original_share()[EU])
    # SIGTERM after the first batch: exit 3, the JSON says what is left.
    proc = _start(stack, "evacuate", EU, "--batch", "256")
    _wait_line(proc, "batch 2/")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    data = parse(out)
    assert data is not None
    assert data["complete"] is False
    assert data["interrupted"] is True
    moved = data["shards_moved"]
    assert 256 <= moved < total
    left = data["left"]
    assert left["shards_homed_in_region"] == total - moved
    assert left["gateways_serving"] == [f"{EU}/gw-1"]  # the drain had not begun
    assert "left: shards_homed_in_region" in err
    view = map_view(stack)
    assert round(view.home_share[EU] * 4096) == total - moved

    # A crash (SIGKILL) in the middle of the rerun: the map stays consistent.
    proc = _start(stack, "evacuate", EU, "--batch", "256")
    _wait_line(proc, "batch 2/")
    proc.kill()
    proc.communicate(timeout=30)
    after_crash = round(map_view(stack).home_share[EU] * 4096)
    assert after_crash < total - moved

    # The next run does only what is left, shards left draining included.
    resumed = run_region(stack, "evacuate", EU)
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.data is not None
    assert resumed.data["complete"] is True
    assert resumed.data["shards_planned"] == after_crash
    assert resumed.data["left"]["shards_homed_in_region"] == 0
    assert resumed.data["left"]["shards_draining"] == 0
    print(
        f"resumed evacuation: {after_crash} shards left after a SIGTERM and a SIGKILL, "
        f"finished in {resumed.data['duration_s']} s"
    )

    # opsctl status agrees: eu-central homes nothing now.
    state = str(stack.config.state_dir)
    empty = tmp_path / "kubeconfig"  # no clusters: the local stack is the only source
    empty.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    shown = opsctl(
        "status", "--stack", STACK, "--state-dir", state, "--kubeconfig", str(empty), "-o", "json"
    )
    assert shown.exit_code == 0, shown.stderr
    homes = {row["region"]: row["homeShare"] for row in json.loads(shown.stdout)}
    assert homes == {EU: 0.0, US: 1.0}

    # eu-central is out: us-east is the last region homing anything. Exit 2, nothing changed.
    epoch = map_view(stack).epoch
    last = opsctl("region", "evacuate", US, "--stack", STACK, "--state-dir", state)
    assert last.exit_code == 2
    assert "last region homing conversations" in last.stderr
    assert map_view(stack).epoch == epoch


def test_bad_input_exits_2_before_anything_changes(
    multi_region_stack: LocalStack, opsctl: OpsctlRunner
) -> None:
    stack = multi_region_stack
    state = str(stack.config.state_dir)
    epoch = map_view(stack).epoch
    unknown = opsctl("region", "evacuate", "mars", "--stack", STACK, "--state-dir", state)
    assert unknown.exit_code == 2
    assert "unknown region 'mars'" in unknown.stderr
    assert "eu-central, us-east" in unknown.stderr
    # the one-region spec's region, against the staging stack's state dir
    other = opsctl("region", "restore", "local", "--stack", "local", "--state-dir", state)
    assert other.exit_code == 2
    assert "runs stack 'staging', not 'local'" in other.stderr
    batch = opsctl("region", "evacuate", EU, "--batch", "0", "--stack", STACK, "--state-dir", state)
    assert batch.exit_code == 2
    assert map_view(stack).epoch == epoch
    assert map_view(stack).home_share == original_share()


# ---- the unplanned failover: a frozen region --------------------------------------------------

# The region's IM processes and its Cassandra node (its DC). Its Kafka is left running: a
# frozen Kafka stalls MirrorMaker 2's other direction for 5 minutes after it wakes (Connect's
# scheduled.rebalance.max.delay.ms), which would starve the tests that share the stack.
FROZEN = [f"{EU}/gw-1", f"{EU}/dispatcher", f"{EU}/relay", f"{EU}/cassandra"]


def _fail_over(stack: LocalStack) -> None:
    failover = run_region(stack, "evacuate", EU, "--unreachable")
    assert failover.exit_code == 0, failover.stderr
    data = failover.data
    assert data is not None
    assert data["mode"] == "unplanned"
    assert data["complete"] is True
    assert set(FROZEN) <= set(data["unhealthy"])
    assert data["home_share"] == {EU: 0.0, US: 1.0}
    assert data["failover_s"] is not None
    print(
        f"unplanned failover: {data['shards_moved']} shards, survivors on the new epoch "
        f"{data['failover_s']} s after the first move, {data['duration_s']} s in all"
    )


def test_an_unreachable_region_fails_over_then_reconciles_and_comes_back(
    home_again: LocalStack, opsctl: OpsctlRunner
) -> None:
    stack = home_again
    state = str(stack.config.state_dir)
    tag = uuid.uuid4().hex[:6]
    convs = convs_homed(EU, 4, tag)
    before = Senders(stack, convs)
    during = Senders(stack, convs)

    before.rounds_from(EU, 3, "before")
    cql_us = RegionCql(stack, stack.info.region(US))
    try:
        for conv in convs:  # sequenced by eu-central and replicated to us-east's DC
            mids = before.acked(conv)
            _wait_sequenced(cql_us, conv, mids, "sequenced before the freeze")

        signal_region(stack, FROZEN, signal.SIGSTOP)
        time.sleep(7)  # longer than the map lease: eu-central's reports go stale
        epoch = map_view(stack).epoch
        planned = opsctl("region", "evacuate", EU, "--stack", STACK, "--state-dir", state)
        assert planned.exit_code == 2
        assert "--unreachable" in planned.stderr
        assert map_view(stack).epoch == epoch

        _fail_over(stack)

        during.rounds_from(US, 3, "during")  # the lost region's clients now use us-east
        for conv in convs:  # sequenced by the new home while eu-central is gone
            mids = during.acked(conv)
            _wait_sequenced(cql_us, conv, mids, f"sequenced by {US}")
            assert _fence_writer(cql_us, conv).startswith(f"{US}:")
        assert not cql_us.held() & {m for c in convs for m in during.acked(c)}

        refused = run_region(stack, "restore", EU)
        assert refused.exit_code == 2, refused.stderr
        assert "must be back first" in refused.stderr
    finally:
        signal_region(stack, FROZEN, signal.SIGCONT)
        cql_us.close()

    def restored() -> bool:
        return run_region(stack, "restore", EU).exit_code == 0

    wait_for(f"{EU} restored once its dispatcher reports again", restored, timeout=120, interval=2)
    assert map_view(stack).home_share == original_share()
    assert map_view(stack).held == 0
    for region in REGIONS:  # zero conflicts in either DC: one seq per message, one per seq
        cql = region_cql(stack, region)  # eu-central was just woken up
        try:
            for conv in convs:
                acked = before.acked(conv) | during.acked(conv)
                _wait_sequenced(cql, conv, acked, f"complete in {region}")
                cql.check(conv, acked)
        finally:
            cql.close()
