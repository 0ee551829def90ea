"""Helpers for the region operation tests on the session's multi-region stack (staging).

Every test that moves homes takes ``home_again``: whatever the test did or left (a region's
processes frozen, a gateway drained, shards moved or left draining), the stack is back to its
original homes afterwards, because the other tests of the session share that stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.shardmap import ShardMap
from opsctl.local import LocalStack, RegionInfo
from opsctl.region import LocalRegions, MapView, read_map
from tests.gateway import support
from tests.gateway.test_fencing import Cql
from tests.support import wait_for

STACK = "staging"
REGIONS = ("eu-central", "us-east")
OPSCTL = Path(sys.executable).parent / "opsctl"


@dataclass(frozen=True)
class Ran:
    exit_code: int
    data: dict[str, Any] | None
    stderr: str


def region_command(stack: LocalStack, *args: str) -> list[str]:
    state = str(stack.config.state_dir)
    return [str(OPSCTL), "region", *args, "--stack", STACK, "--state-dir", state, "-o", "json"]


def clean_env() -> dict[str, str]:
    """The environment without the developer's OPSCTL_* and IMGW_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPSCTL_", "IMGW_"))}


def parse(stdout: str) -> dict[str, Any] | None:
    return json.loads(stdout) if stdout.strip() else None


def run_region(stack: LocalStack, *args: str, timeout: float = 300) -> Ran:
    """``opsctl region ARGS`` as a user runs it (a process of its own)."""
    done = subprocess.run(
        region_command(stack, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        check=False,
    )
    return Ran(done.returncode, parse(done.stdout), done.stderr)


def map_view(stack: LocalStack) -> MapView:
    return read_map(LocalRegions.of(stack, STACK))


def original_share(digits: int | None = None) -> dict[str, float]:
    """Each region's share of the shards when homes are their rendezvous ones; ``digits``:
    rounded as opsctl's JSON rounds it."""
    share = {r: n / 4096 for r, n in ShardMap(0, REGIONS).share().items()}
    return share if digits is None else {r: round(v, digits) for r, v in share.items()}


def convs_homed(home: str, count: int, tag: str) -> list[str]:
    return support.convs_homed(REGIONS, home, count, tag)


def signal_region(stack: LocalStack, names: list[str], sig: signal.Signals) -> None:
    for name in names:
        pid = stack.pid(name)
        assert pid is not None, f"{name} is not running"
        os.kill(pid, sig)


class RegionCql(Cql):
    """Tests/gateway's CQL checks, through one region's own Cassandra node and DC (so they
    work while another region's node is frozen)."""

    def held(self) -> set[str]:
        """Message ids held until reconciliation (im_control.held_records)."""
        rows = self.session.execute("SELECT message_id FROM im_control.held_records")
        return {row.message_id for row in rows}

    def __init__(self, stack: LocalStack, region: RegionInfo) -> None:
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import WhiteListRoundRobinPolicy

        profile = ExecutionProfile(
            load_balancing_policy=WhiteListRoundRobinPolicy([region.cassandra_host])
        )
        self.cluster = Cluster(
            [region.cassandra_host],
            port=region.cassandra_port,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            **stack.cassandra_kwargs(),
        )
        self.session = self.cluster.connect(stack.info.cassandra_keyspace)


def region_cql(stack: LocalStack, region: str, timeout: float = 90) -> RegionCql:
    """A RegionCql once that region's node answers: just after a SIGCONT (a frozen region
    woken up) its JVM can take longer than the driver's connect timeout on a loaded run."""
    from cassandra.cluster import NoHostAvailable

    def connected() -> RegionCql | None:
        try:
            return RegionCql(stack, stack.info.region(region))
        except NoHostAvailable:
            return None

    return wait_for(f"{region}'s Cassandra answering", connected, timeout=timeout, interval=2)


def restore_homes(stack: LocalStack) -> None:
    """Thaw every process, start whatever is stopped, and restore every region's homes."""
    for row in stack.status():
        if row.pid is not None:
            os.kill(row.pid, signal.SIGCONT)
    stack.up()
    for region in REGIONS:
        # The region's dispatchers must report again after a freeze: retry while it says so.
        def restored(region: str = region) -> bool:
            ran = run_region(stack, "restore", region)
            return ran.exit_code == 0

        wait_for(f"{region} restored", restored, timeout=240, interval=2)
    view = map_view(stack)
    assert view.home_share == original_share()
    assert view.draining == 0


@pytest.fixture
def home_again(multi_region_stack: LocalStack) -> Iterator[LocalStack]:
    """The session's multi-region stack; its original homes are restored after the test."""
    try:
        yield multi_region_stack
    finally:
        restore_homes(multi_region_stack)
