"""Stacks of their own (infrastructure only): a taken port, a broken Kafka, up then down."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import psutil
import pytest
import redis

from opsctl.local import ComponentFailed, LocalStack, find_free_port_block, resolve_config
from opsctl.local._procs import marked_processes
from tests.support import OpsctlRunner, require_tool

pytestmark = pytest.mark.integration


def _leftovers(state_dir: Path) -> list[str]:
    """Every process that belongs to the stack in ``state_dir``, found two independent ways."""
    found = [f"{p.pid} {p.name()}" for p in marked_processes(str(state_dir))]
    pgrep = subprocess.run(
        [require_tool("pgrep"), "-af", str(state_dir)], capture_output=True, text=True, check=False
    )
    found += [line for line in pgrep.stdout.splitlines() if "pgrep" not in line]
    return found


def test_a_taken_port_fails_fast_with_exit_2_and_starts_nothing(
    tmp_path: Path, opsctl: OpsctlRunner
) -> None:
    base = find_free_port_block()
    state_dir = tmp_path / "state"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 1))  # the Kafka port
        squatter.listen()
        result = opsctl(
            "local", "up", "--infra-only", "--state-dir", str(state_dir), "--base-port", str(base)
        )
    assert result.exit_code == 2
    assert f"port {base + 1} needed by kafka is already in use" in result.stderr
    assert not state_dir.exists()  # checked before anything changed
    assert _leftovers(state_dir) == []


def test_a_broken_kafka_names_itself_shows_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    config = resolve_config(
        state_dir=tmp_path / "state", base_port=find_free_port_block(), im=False, env={}
    ).model_copy(update={"kafka_overrides": {"num.io.threads": "lots"}})
    stack = LocalStack(config)
    with pytest.raises(ComponentFailed) as caught:
        stack.up()
    failure = caught.value
    assert failure.component == "kafka"
    assert "exited with code" in failure.reason
    assert any("num.io.threads" in line for line in failure.log_tail), failure.log_tail
    assert 0 < len(failure.log_tail) <= 20
    assert "num.io.threads" in failure.message  # the tail is part of what the user sees
    assert _leftovers(config.state_dir) == []
    assert list((config.state_dir / "run").glob("*.pid")) == []


def test_up_then_down_leaves_nothing_and_wipe_deletes_the_data(tmp_path: Path) -> None:
    config = resolve_config(
        state_dir=tmp_path / "state", base_port=find_free_port_block(), im=False, env={}
    )
    stack = LocalStack(config)
    try:
        stack.up()
        pids = [row.pid for row in stack.status() if row.pid]
        assert len(pids) == 8
        redis.Redis.from_url(stack.info.redis_url, **stack.redis_kwargs()).set("k", "v")
    finally:
        stopped = stack.down()
    assert stopped == [
        "prometheus",
        "alertmanager",
        "redis-replica-exporter",
        "redis-exporter",
        "kafka",
        "cassandra",
        "redis-replica",
        "redis",
    ]
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert _leftovers(config.state_dir) == []
    # No exporter is left behind: nothing listens on the JMX agents' or exporters' ports.
    ports = config.ports
    exporter_ports = [
        ports.kafka_metrics,
        ports.cassandra_metrics,
        ports.redis_replica,
        ports.redis_exporter,
        ports.redis_replica_exporter,
    ]
    listening = [
        conn.laddr.port
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in exporter_ports
    ]
    assert listening == []
    exporters = [
        proc.pid
        for proc in psutil.process_iter(["cmdline"])
        if any(f"127.0.0.1:{ports.redis_exporter}" in arg for arg in proc.info["cmdline"] or [])
    ]
    assert exporters == []
    assert (config.state_dir / "cassandra" / "data").is_dir()  # data kept for a warm start
    assert (config.state_dir / "redis" / "data" / "appendonlydir").is_dir()
    assert stack.down() == []  # nothing left to stop
    stack.down(wipe=True)
    assert not config.state_dir.exists()
