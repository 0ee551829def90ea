"""The real local stack (one per session): health, real clients, idempotence, failure drills."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time

import httpx
import psutil
import pytest
import redis

from opsctl.local import LocalStack
from opsctl.local._procs import marked_processes
from tests.opsctl.local.expected import IM_COMPONENTS, INFRA_COMPONENTS
from tests.support import OpsctlRunner, wait_for

pytestmark = pytest.mark.integration


def _wait_all_healthy(stack: LocalStack) -> None:
    """After a drill: the IM processes reconnect on their own; wait until they report ready."""
    wait_for(
        "every component healthy",
        lambda: all(row.healthy for row in stack.status()),
        timeout=30,
    )


def test_every_component_is_running_and_healthy(local_stack: LocalStack) -> None:
    rows = local_stack.status()
    assert [row.name for row in rows] == [*INFRA_COMPONENTS, *IM_COMPONENTS]
    for row in rows:
        assert row.running, row
        assert row.healthy, row
        assert row.pid is not None
        assert os.getsid(row.pid) == row.pid  # own session: the whole tree can be killed
    # The safety net `down` uses finds every one of them (redis by its command line).
    marked = {proc.pid for proc in marked_processes(local_stack.marker)}
    assert {row.pid for row in rows} <= marked


def test_redis_is_real_and_keeps_data_across_a_restart(local_stack: LocalStack) -> None:
    client = redis.Redis.from_url(local_stack.info.redis_url, **local_stack.redis_kwargs())
    client.set("opsctl-local-test", "kept")
    old_pid = local_stack.pid("redis")
    local_stack.restart("redis")
    assert local_stack.pid("redis") != old_pid
    client = redis.Redis.from_url(local_stack.info.redis_url, **local_stack.redis_kwargs())
    assert client.get("opsctl-local-test") == b"kept"
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    _wait_all_healthy(local_stack)


def test_kafka_has_the_message_topic_with_the_spec_partitions(local_stack: LocalStack) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    async def describe() -> list[dict[str, object]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=local_stack.info.kafka_bootstrap)
        await admin.start()
        try:
            return await admin.describe_topics([local_stack.info.kafka_topic])  # type: ignore[no-any-return]
        finally:
            await admin.close()

    (topic,) = asyncio.run(describe())
    assert topic["error_code"] == 0
    assert len(topic["partitions"]) == local_stack.info.kafka_partitions == 6  # type: ignore[arg-type]


def test_cassandra_is_real_and_migrated(local_stack: LocalStack) -> None:
    from cassandra.cluster import Cluster

    info = local_stack.info
    cluster = Cluster(
        [info.cassandra_host], port=info.cassandra_port, **local_stack.cassandra_kwargs()
    )
    try:
        session = cluster.connect()
        version = session.execute("SELECT release_version FROM system.local").one()[0]
        keyspaces = {
            row.keyspace_name
            for row in session.execute("SELECT keyspace_name FROM system_schema.keyspaces")
        }
    finally:
        cluster.shutdown()
    assert version.startswith("5.0.")
    assert info.cassandra_keyspace in keyspaces  # gateway.migrate ran before the gateways


def test_prometheus_scrapes_gateways_dispatcher_and_itself(local_stack: LocalStack) -> None:
    url = f"{local_stack.info.prometheus_url}/api/v1/targets"

    def all_up() -> bool:
        targets = httpx.get(url, timeout=5).json()["data"]["activeTargets"]
        up = {(t["labels"]["job"], t["labels"].get("node")) for t in targets if t["health"] == "up"}
        return {
            ("prometheus", None),
            ("im-dispatcher", "dispatcher-1"),
            ("im-gateway", "gw-1"),
            ("im-gateway", "gw-2"),
        } <= up

    wait_for("every Prometheus target to be up", all_up, timeout=30)
    alertmanagers = httpx.get(f"{local_stack.info.prometheus_url}/api/v1/alertmanagers").json()
    active = [am["url"] for am in alertmanagers["data"]["activeAlertmanagers"]]
    assert active == [f"{local_stack.info.alertmanager_url}/api/v2/alerts"]


def test_alertmanager_runs_without_gossip(local_stack: LocalStack) -> None:
    status = httpx.get(f"{local_stack.info.alertmanager_url}/api/v2/status", timeout=5).json()
    assert status["cluster"]["status"] == "disabled"
    assert local_stack.info.alert_webhook_url in status["config"]["original"]


def test_gateways_and_dispatcher_serve_the_contract_endpoints(local_stack: LocalStack) -> None:
    _wait_all_healthy(local_stack)
    for base in [*local_stack.info.gateway_http_urls, local_stack.info.dispatcher_url]:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(base + path, timeout=5).status_code == 200, base + path


def test_the_jwt_secret_is_private(local_stack: LocalStack) -> None:
    path = local_stack.info.jwt_secret_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text()
    assert len(secret) >= 32
    recorded = local_stack.config.recorded_file().read_text()
    assert secret not in recorded
    for log in (local_stack.config.state_dir / "logs").glob("*.log"):
        assert secret not in log.read_text(errors="replace"), log


def test_up_again_is_idempotent(local_stack: LocalStack) -> None:
    before = {name: local_stack.pid(name) for name in local_stack.names()}
    started = time.monotonic()
    local_stack.up()
    assert time.monotonic() - started < 10
    assert {name: local_stack.pid(name) for name in local_stack.names()} == before


def test_a_killed_gateway_is_seen_and_up_restarts_only_it(local_stack: LocalStack) -> None:
    others = {name: local_stack.pid(name) for name in local_stack.names() if name != "gw-1"}
    old = local_stack.pid("gw-1")
    assert old is not None
    assert local_stack.kill("gw-1")
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
    row = next(row for row in local_stack.status() if row.name == "gw-1")
    assert (row.running, row.healthy, row.pid) == (False, False, None)
    local_stack.up()  # the stale pid file is handled; only gw-1 starts
    assert local_stack.pid("gw-1") not in (None, old)
    assert {name: local_stack.pid(name) for name in others} == others
    assert httpx.get(local_stack.info.gateway_http_urls[0] + "/readyz").status_code == 200
    _wait_all_healthy(local_stack)


def test_restart_the_dispatcher(local_stack: LocalStack) -> None:
    old = local_stack.pid("dispatcher")
    local_stack.restart("dispatcher")
    assert local_stack.pid("dispatcher") not in (None, old)
    assert httpx.get(local_stack.info.dispatcher_url + "/readyz").status_code == 200
    _wait_all_healthy(local_stack)


# ---- through the CLI ------------------------------------------------------------------------


def test_cli_status_json(local_stack: LocalStack, opsctl: OpsctlRunner) -> None:
    state = str(local_stack.config.state_dir)
    result = opsctl("local", "status", "--state-dir", state, "--output", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["healthy"] is True
    ports = {row["name"]: row["port"] for row in data["components"]}
    assert ports["kafka"] == local_stack.config.ports.kafka
    assert all(row["pid"] for row in data["components"])


def test_cli_status_table_and_logs(local_stack: LocalStack, opsctl: OpsctlRunner) -> None:
    state = str(local_stack.config.state_dir)
    table = opsctl("local", "status", "--state-dir", state)
    assert table.exit_code == 0
    assert "cassandra" in table.stdout
    assert "CQL READY" in table.stdout
    logs = opsctl("local", "logs", "kafka", "--lines", "5", "--state-dir", state)
    assert logs.exit_code == 0
    assert len(logs.stdout.splitlines()) == 5
    unknown = opsctl("local", "logs", "zookeeper", "--state-dir", state)
    assert unknown.exit_code == 2
    assert "unknown component 'zookeeper'" in unknown.stderr


def test_cli_up_again_reports_already_running(
    local_stack: LocalStack, opsctl: OpsctlRunner
) -> None:
    config = local_stack.config
    argv = ["local", "up", "--state-dir", str(config.state_dir)]
    argv += ["--base-port", str(config.ports.redis), "--gateways", str(config.gateways)]
    result = opsctl(*argv)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("already running") == len(local_stack.names())
    secret = config.state_dir.joinpath("secrets", "jwt-hs256.key").read_text()
    assert secret not in result.stdout + result.stderr


def test_cli_up_with_other_ports_on_a_running_stack_is_refused(
    local_stack: LocalStack, opsctl: OpsctlRunner
) -> None:
    state = str(local_stack.config.state_dir)
    other = str(local_stack.config.ports.redis + 1000)
    result = opsctl("local", "up", "--state-dir", state, "--base-port", other)
    assert result.exit_code == 2
    assert "different configuration" in result.stderr
