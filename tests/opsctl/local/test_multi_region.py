"""The real multi-region local stack (staging: two regions, one session-scoped stack): every
region healthy, MirrorMaker 2 mirroring both ways, one Cassandra cluster with a DC per region
plus the witness, a DM accepted in one region persisted in the other's DC, and one Prometheus
with every region's targets up."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx
import jwt
import pytest
from websockets.sync.client import ClientConnection, connect

from opsctl.local import LocalStack, RegionInfo
from tests.support import OpsctlRunner, wait_for

pytestmark = pytest.mark.integration

REGIONS = ("eu-central", "us-east")
DATACENTERS = {"eu-central", "us-east", "witness"}


# ---- helpers: a Kafka reader, a CQL session in one DC, a synchronous protocol client --------


def _topics(bootstrap: str) -> dict[str, int]:
    """Topic -> partition count on one region's Kafka."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def describe() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            names = await admin.list_topics()
            described = await admin.describe_topics(names)
        finally:
            await admin.close()
        return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}

    return asyncio.run(describe())


def _values(bootstrap: str, topic: str) -> list[bytes]:
    """Every record value of ``topic`` now (from the beginning to the current end)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    partitions = _topics(bootstrap).get(topic, 0)
    assigned = [TopicPartition(topic, p) for p in range(partitions)]
    if not assigned:
        return []

    async def read() -> list[bytes]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            end = await consumer.end_offsets(assigned)
            values: list[bytes] = []
            pending = {tp for tp in assigned if end[tp] > 0}
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=2000)
                if not batches:
                    break
                for tp, records in batches.items():
                    values += [r.value for r in records if r.value is not None]
                    if records and records[-1].offset + 1 >= end[tp]:
                        pending.discard(tp)
            return values
        finally:
            # aiokafka's group-less consumer may cancel its own reset task while stopping.
            with suppress(asyncio.CancelledError):
                await consumer.stop()

    return asyncio.run(read())


@contextmanager
def _cql(region: RegionInfo, stack: LocalStack) -> Iterator[Any]:
    """A session that talks only to ``region``'s DC (its node, local-DC routing)."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy(region.datacenter))
    cluster = Cluster(
        [region.cassandra_host],
        port=region.cassandra_port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        **stack.cassandra_kwargs(),
    )
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


def _token(stack: LocalStack, user: str) -> str:
    info = stack.info
    claims = {"sub": user, "iss": info.jwt_issuer, "aud": info.jwt_audience}
    secret = info.jwt_secret_file.read_text().strip()
    return jwt.encode({**claims, "exp": 2**31 - 1}, secret, algorithm="HS256")


@contextmanager
def _session(stack: LocalStack, url: str, user: str) -> Iterator[ClientConnection]:
    """A session (docs/protocol.md 1.2) without sync: hello, welcome from gw-1."""
    headers = {"Authorization": f"Bearer {_token(stack, user)}"}
    with connect(url, additional_headers=headers) as ws:
        ws.send(json.dumps({"op": "hello", "device_id": "d1", "ref": "hello-1"}))
        welcome = json.loads(ws.recv(timeout=10))
        assert welcome["op"] == "welcome", welcome
        assert welcome["node_id"] == "gw-1"
        yield ws


def _send_dm(ws: ClientConnection, to: str, body: str) -> dict[str, Any]:
    """Send one DM and return its ack (frames other than the ack are skipped)."""
    cmid = uuid.uuid4().hex
    ws.send(json.dumps({"op": "send", "client_msg_id": cmid, "to": to, "body": body}))

    def ack() -> dict[str, Any]:
        try:
            frame: dict[str, Any] = json.loads(ws.recv(timeout=0.2))
        except TimeoutError:
            return {}
        assert frame.get("op") != "error", frame
        return frame if frame.get("op") == "ack" and frame["client_msg_id"] == cmid else {}

    return wait_for(f"ack of {cmid}", ack, timeout=30, interval=0)


def _dm_across(stack: LocalStack, source: RegionInfo, target: RegionInfo) -> tuple[str, str]:
    """A DM from a user connected in ``source`` to one connected in ``target``; returns its
    conversation id and body once ``source`` acked it."""
    suffix = uuid.uuid4().hex[:8]
    alice, bob = f"alice-{suffix}", f"bob-{suffix}"
    body = f"from {source.name} to {target.name} {suffix}"
    with (
        _session(stack, source.gateway_ws_urls[0], alice) as sender,
        _session(stack, target.gateway_ws_urls[0], bob),
    ):
        ack = _send_dm(sender, bob, body)
    return ack["conversation_id"], body


# ---- the tests --------------------------------------------------------------------------------


def test_every_region_is_up_and_healthy(multi_region_stack: LocalStack) -> None:
    rows = multi_region_stack.status()
    unhealthy = [(row.name, row.detail) for row in rows if not row.healthy]
    assert not unhealthy
    names = {row.name for row in rows}
    for region in REGIONS:
        expected = {"redis", "kafka", "cassandra", "dispatcher", "relay", "gw-1"}
        assert {f"{region}/{part}" for part in expected} <= names
        assert {row.region for row in rows if row.name.startswith(f"{region}/")} == {region}
    assert {"witness/cassandra", "mirrormaker", "prometheus", "alertmanager"} <= names
    assert [region.name for region in multi_region_stack.info.regions] == list(REGIONS)


def test_status_json_gives_every_region_and_the_token_settings(
    multi_region_stack: LocalStack, opsctl: OpsctlRunner
) -> None:
    state = str(multi_region_stack.config.state_dir)
    result = opsctl("local", "status", "--state-dir", state, "--output", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["healthy"] is True
    assert data["stack"] == "staging"
    regions = {region["name"]: region for region in data["regions"]}
    assert list(regions) == list(REGIONS)
    for name, region in regions.items():
        info = multi_region_stack.info.region(name)
        assert region["gateway_ws_urls"] == list(info.gateway_ws_urls)
        assert region["datacenter"] == name
    assert data["jwt_secret_file"] == str(multi_region_stack.info.jwt_secret_file)
    assert (data["jwt_issuer"], data["jwt_audience"]) == ("im-local", "im-gateway")


def test_each_kafka_has_the_topics_and_mirrormaker_mirrors_both_ways(
    multi_region_stack: LocalStack,
) -> None:
    info = multi_region_stack.info
    for region in info.regions:
        (peer,) = [r.name for r in info.regions if r.name != region.name]
        wanted = {f"{peer}.im.messages", f"{peer}.checkpoints.internal"}
        topics = _wait_for_topics(region, wanted)
        assert topics["im.messages"] == region.kafka_partitions == 12
        assert topics[f"{peer}.im.messages"] == 12  # the source's partitions
        # DefaultReplicationPolicy: never mirrored back (no eu-central.us-east.im.messages).
        assert f"{region.name}.{peer}.im.messages" not in topics
    # A record accepted in one region arrives in the other as <source>.im.messages.
    for source, target in (info.regions, info.regions[::-1]):
        _, body = _dm_across(multi_region_stack, source, target)
        _wait_for_value(target, f"{source.name}.im.messages", body)


def _wait_for_topics(region: RegionInfo, wanted: set[str]) -> dict[str, int]:
    def present() -> dict[str, int]:
        topics = _topics(region.kafka_bootstrap)
        return topics if wanted <= set(topics) else {}

    return wait_for(f"{sorted(wanted)} in {region.name}", present, timeout=60, interval=1)


def _wait_for_value(region: RegionInfo, topic: str, text: str) -> None:
    def arrived() -> bool:
        return any(text.encode() in value for value in _values(region.kafka_bootstrap, topic))

    wait_for(f"{text!r} in {region.name}'s {topic}", arrived, timeout=60, interval=1)


def test_one_cassandra_cluster_with_a_dc_per_region_and_the_witness(
    multi_region_stack: LocalStack,
) -> None:
    region = multi_region_stack.info.regions[0]
    keyspace = multi_region_stack.info.cassandra_keyspace
    with _cql(region, multi_region_stack) as session:
        peers = {row.peer: row.data_center for row in session.execute("SELECT * FROM system.peers")}
        local = session.execute("SELECT data_center FROM system.local").one().data_center
        replication = dict(
            session.execute(
                "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
                (keyspace,),
            )
            .one()
            .replication
        )
        hosts = session.cluster.metadata.all_hosts()
    assert local == "eu-central"
    assert peers == {"127.0.0.2": "us-east", "127.0.0.3": "witness"}
    assert {host.datacenter for host in hosts} == DATACENTERS
    assert replication.pop("class").endswith("NetworkTopologyStrategy")
    assert replication == dict.fromkeys(DATACENTERS, "1")


def test_a_dm_accepted_in_one_region_is_persisted_in_the_other_dc(
    multi_region_stack: LocalStack,
) -> None:
    source, target = multi_region_stack.info.regions
    conversation, body = _dm_across(multi_region_stack, source, target)

    def persisted_in_target() -> str | None:
        with _cql(target, multi_region_stack) as session:
            session.set_keyspace(multi_region_stack.info.cassandra_keyspace)
            seqs = list(
                session.execute(
                    "SELECT seq, bucket FROM message_seqs WHERE conversation_id = %s",
                    (conversation,),
                )
            )
            for row in seqs:
                found = session.execute(
                    "SELECT body FROM messages WHERE conversation_id = %s AND bucket = %s "
                    "AND seq = %s",
                    (conversation, row.bucket, row.seq),
                ).one()
                if found is not None:
                    return str(found.body)
        return None

    assert wait_for(f"{conversation} in {target.name}'s DC", persisted_in_target) == body


def test_prometheus_has_up_targets_in_every_region(multi_region_stack: LocalStack) -> None:
    url = f"{multi_region_stack.info.prometheus_url}/api/v1/targets"
    wanted = {
        *(
            (job, region)
            for job in ("im-gateway", "im-dispatcher", "kafka", "redis")
            for region in REGIONS
        ),
        *(("cassandra", dc) for dc in DATACENTERS),
        ("mirrormaker", REGIONS[0]),
        ("prometheus", REGIONS[0]),
    }

    def missing() -> set[tuple[str, str]] | None:
        targets = httpx.get(url, timeout=5).json()["data"]["activeTargets"]
        assert all(t["labels"].get("region") for t in targets)
        up = {(t["labels"]["job"], t["labels"]["region"]) for t in targets if t["health"] == "up"}
        return None if wanted <= up else wanted - up

    wait_for("every region's targets up", lambda: missing() is None, timeout=60, interval=1)
