"""Helpers shared by the gateway's integration tests."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence


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
