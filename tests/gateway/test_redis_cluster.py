"""The gateway and the dispatcher against a real three-node Redis Cluster (the production
regions shard Redis): migrate, a dispatcher and two gateways run with IMGW_REDIS_CLUSTER=true on
their own topic, consumer group and keyspace, next to the shared local stack's Kafka and
Cassandra. Conversations land on every shard; messages, groups, receipts, presence and offline
sync must work as on a single server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from opsctl.local import LocalStack
from opsctl.local._procs import find_free_port_block, port_free
from opsctl.paths import REPO_ROOT
from tests.gateway.conftest import Im
from tests.gateway.protocol_client import dm
from tests.support import plain_redis_env, wait_for

pytestmark = pytest.mark.integration

REDIS_SERVER = Path("/usr/bin/redis-server")
REDIS_CLI = Path("/usr/bin/redis-cli")
NODES = 3
BUS_PORT_OFFSET = 10000  # Redis Cluster's fixed offset of the cluster bus port


def _free_cluster_ports(count: int) -> list[int]:
    """Consecutive free ports p with p + 10000 free too: a cluster node listens there for the
    cluster bus."""
    for _ in range(50):
        base = find_free_port_block(count)
        ports = list(range(base, base + count))
        if all(port_free(port + BUS_PORT_OFFSET) for port in ports):
            return ports
    raise AssertionError("no free ports for a Redis Cluster")


def _cli(port: int, *args: str) -> str:
    argv = [str(REDIS_CLI), "-p", str(port), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"redis-cli {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def _stop(procs: list[subprocess.Popen[bytes]], grace_s: float) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class RedisCluster:
    ports: list[int]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def slot_owner(self, key: str) -> int:
        """Which node's port serves the key's hash slot."""
        slot = int(_cli(self.ports[0], "cluster", "keyslot", key))
        for node in _cli(self.ports[0], "cluster", "nodes").splitlines():
            fields = node.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    return port
        raise AssertionError(f"no node serves slot {slot}")


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    for tool in (REDIS_SERVER, REDIS_CLI):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} is missing: run `make setup` (Debian package redis-server)")
    root = tmp_path_factory.mktemp("redis-cluster")
    ports = _free_cluster_ports(NODES)
    procs = []
    try:
        for port in ports:
            workdir = root / str(port)
            workdir.mkdir()
            options = {
                "port": str(port),
                "bind": "127.0.0.1",
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": "3000",
                "dir": str(workdir),
                "save": "",
                "appendonly": "no",
                "logfile": "redis.log",
            }
            argv = [str(REDIS_SERVER), *(arg for o, v in options.items() for arg in (f"--{o}", v))]
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port in ports:
            wait_for(f"redis on {port}", lambda p=port: _ping(p), timeout=30)
        nodes = [f"127.0.0.1:{p}" for p in ports]
        _cli(ports[0], "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes")
        for port in ports:
            wait_for(
                f"cluster_state:ok on {port}",
                lambda p=port: "cluster_state:ok" in _cli(p, "cluster", "info"),
                timeout=30,
            )
        yield RedisCluster(ports)
    finally:
        _stop(procs, 10)


def _ping(port: int) -> bool:
    argv = [str(REDIS_CLI), "-p", str(port), "ping"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    return done.stdout.strip() == "PONG"


@pytest.fixture(scope="module")
def cluster_im(
    local_stack: LocalStack, redis_cluster: RedisCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    suffix = uuid.uuid4().hex[:8]
    logs = tmp_path_factory.mktemp("cluster-im")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IMGW_")},
        **local_stack.imgw_env(),
        "PYTHONUNBUFFERED": "1",
        **plain_redis_env(redis_cluster.url),
        "IMGW_REDIS_CLUSTER": "true",
        "IMGW_KAFKA_TOPIC": f"im.cluster-test-{suffix}",
        "IMGW_KAFKA_CONSUMER_GROUP": f"im-dispatcher-cluster-{suffix}",
        "IMGW_CASSANDRA_KEYSPACE": f"im_cluster_{suffix}",
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "gateway.migrate"],
        env={**env, "IMGW_NODE_ID": "migrate-cluster"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    base = find_free_port_block(3)
    ports = [base, base + 1, base + 2]
    procs: list[subprocess.Popen[bytes]] = []
    roles = [("gateway.dispatcher", "cdisp-1", ports[0])]
    roles += [("gateway.server", f"cgw-{i + 1}", ports[1 + i]) for i in range(2)]
    try:
        for module, node, port in roles:
            with (logs / f"{node}.log").open("wb") as log:
                own = {"IMGW_NODE_ID": node, "IMGW_LISTEN_PORT": str(port)}
                proc = subprocess.Popen(
                    [sys.executable, "-m", module],
                    env={**env, **own},
                    cwd=REPO_ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                procs.append(proc)
        for (_, node, port), proc in zip(roles, procs, strict=True):
            log_file = logs / f"{node}.log"
            wait_for(f"{node} ready", lambda p=port, pr=proc, f=log_file: _ready(p, pr, f))
        yield [f"ws://127.0.0.1:{port}/ws" for _, _, port in roles[1:]]
    finally:
        _stop(procs, 15)


def _ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        pytest.fail(f"{log.name}: exited {proc.returncode}:\n{log.read_text()}")
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    return False


def test_messages_groups_receipts_and_sync_work_on_a_sharded_redis(
    im: Im, redis_cluster: RedisCluster, cluster_im: list[str]
) -> None:
    users = [im.uid(f"u{i}") for i in range(8)]
    # The conversations' keys spread over every shard, so each node's slots are exercised.
    convs = [dm(users[0], peer) for peer in users[1:]]
    owners = {redis_cluster.slot_owner("{" + conv + "}") for conv in convs}
    assert owners == set(redis_cluster.ports), owners

    async def scenario() -> None:
        sender = im.client(users[0], gateway=None)
        sender.urls = [cluster_im[0]]
        peers = []
        for peer in users[1:]:
            client = im.client(peer)
            client.urls = [cluster_im[1]]
            peers.append(client)
        for client in [sender, *peers]:
            await client.connect()
        for round_ in range(5):
            for peer in users[1:]:
                await sender.send(f"m{round_}", to=peer)
        for client, conv in zip(peers, convs, strict=True):
            await client.wait_until(lambda c=client, v=conv: len(c.bodies(v)) == 5, 30, conv)
            assert client.bodies(conv) == [f"m{i}" for i in range(5)]
            assert sorted(seq for c, seq in client.messages if c == conv) == [1, 2, 3, 4, 5]
        # Receipts go through a Lua script on the conversation's shard.
        await peers[0].receipt(convs[0], 5, "read")
        await sender.wait_until(lambda: sender.receipts, 15, "receipt at the sender")
        assert sender.receipts[-1]["seq"] == 5

        # A group: membership cached in Redis, fan-out through sharded pub/sub.
        group = im.uid("team")
        created = await sender.request(
            {"op": "group_create", "group_id": group, "members": users[1:4]}
        )
        assert created["members"] == sorted(users[:4]), created
        await sender.send("hello team", group=group)
        for client in peers[:3]:
            await client.wait_until(
                lambda c=client: c.bodies(f"g:{group}") == ["hello team"], 30, "group message"
            )

        # Offline sync: a peer misses messages while away and gets them on reconnect.
        away = peers[-1]
        await away.close()
        for i in range(3):
            await sender.send(f"while away {i}", to=users[-1])
        await sender.wait_until(lambda: not sender.unacked, 15, "acks while the peer is away")
        again = im.client(users[-1], "d1")
        again.urls = [cluster_im[0]]  # the other gateway, with the device's stored cursors
        again.conversations = away.conversations
        again.messages = dict(away.messages)
        await again.connect()
        await again.wait_until(
            lambda: again.bodies(convs[-1])[-3:] == [f"while away {i}" for i in range(3)],
            30,
            "offline sync",
        )
        # By sync or live, depending on how far the dispatcher got: each exactly once.
        assert sorted(seq for c, seq in again.messages if c == convs[-1]) == list(range(1, 9))
        assert again.duplicates_on_one_connection() == []
        assert sorted(s for c, s in again.messages if c == convs[-1]) == list(range(1, 9))

    im.run(scenario)
