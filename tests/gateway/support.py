"""Helpers shared by the gateway's integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opsctl.local import LocalStack


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process a test started, frozen (SIGSTOP) or not: SIGCONT and SIGTERM, SIGKILL
    after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def extra_gateway(
    stack: LocalStack, node_id: str, settings: Mapping[str, str], log_dir: Path
) -> Iterator[tuple[str, str]]:
    """One more gateway of the running stack, with the stack's settings plus ``settings``
    (IMGW_* variables); yields its (ws URL, http URL) once ready, stops it after."""
    import httpx

    from opsctl.local._procs import find_free_port_block
    from opsctl.paths import REPO_ROOT
    from tests.support import wait_for

    port = find_free_port_block(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGW_")}
    env.update(stack.imgw_env())
    env.update(settings)
    env.update({"IMGW_NODE_ID": node_id, "IMGW_LISTEN_PORT": str(port), "PYTHONUNBUFFERED": "1"})
    log_path = log_dir / f"{node_id}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.server"],
        env=env,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    http_url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, log_path.read_text()[-2000:]
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{http_url}/readyz", timeout=2).status_code == 200
        return False

    try:
        wait_for(f"gateway {node_id} ready", ready, timeout=60, interval=0.2)
        yield f"ws://127.0.0.1:{port}/ws", http_url
    finally:
        stop_process(proc)
        log.close()


def assert_increased(
    before: Mapping[str, float], after: Mapping[str, float], names: Iterable[str]
) -> None:
    """Each series in ``names`` is higher in ``after`` than in ``before`` (absent: 0)."""
    for name in names:
        assert after[name] > before.get(name, 0), f"{name}: {before.get(name, 0)} -> {after[name]}"


def convs_homed(regions: Sequence[str], home: str, count: int, tag: str) -> list[str]:
    """``count`` DM conversations, on distinct shards, whose first home (the map at epoch 0
    over ``regions``) is ``home``; ``tag`` keeps them apart from other tests' conversations."""
    from gateway.homes import shard_of
    from gateway.protocol import dm_conversation
    from gateway.shardmap import ShardMap

    fresh = ShardMap(0, tuple(regions))
    out: list[str] = []
    shards: set[int] = set()
    i = 0
    while len(out) < count:
        conv = dm_conversation(f"a{i}-{tag}", f"b{i}-{tag}")
        shard = shard_of(conv)
        if fresh.entry(shard).home == home and shard not in shards:
            out.append(conv)
            shards.add(shard)
        i += 1
    return out


def injected_record(
    region: str,
    conv: str,
    sender: str,
    *,
    to: str | None = None,
    gid: str | None = None,
    body: str = "injected",
    ts: int | None = None,
    device: str = "injector",
) -> dict[str, Any]:
    """A messages-topic record exactly as a gateway in ``region`` writes it (the gateway's own
    encoder and message id), as a dict so a test can read or corrupt its fields."""
    from gateway.protocol import message_id
    from gateway.records import encode_record

    cmid = uuid.uuid4().hex
    value = encode_record(
        message_id=message_id(sender, cmid),
        conversation_id=conv,
        sender=sender,
        device=device,
        client_msg_id=cmid,
        body=body,
        accepted_at=int(time.time() * 1000) if ts is None else ts,
        node="test",
        epoch=0,
        region=region,
        to=to,
        group_id=gid,
    )
    record: dict[str, Any] = json.loads(value)
    return record


async def produce(bootstrap: str, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
    """Write (key, value) records to a real topic, idempotently, each acknowledged by all
    in-sync replicas."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value=value, key=key.encode())
    finally:
        await producer.stop()
