"""A second Kafka broker joined to the one-region local stack's KRaft cluster, for the faults one
broker cannot show: a partition without a leader while the others keep theirs (the
``kafka-partition-leaderless`` drill; tests/gateway/test_producer_faults.py).

It is a broker-only node voting nowhere: the stack's node stays the only controller. Its
configuration is the stack broker's own (same listeners' security, same settings) with its own
node id, port and log directory. Partitions move onto it and back with Kafka's own reassignment
tool (kafka-tools, fetched with the Kafka jars).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.errors import CheckFailed
from opsctl.local._config import HOST
from opsctl.local._jvm import jar_dir, java_command
from opsctl.local._procs import find_free_port_block
from opsctl.local._render import KAFKA_NODE_ID

if TYPE_CHECKING:
    from opsctl.local._stack import LocalStack

EXTRA_BROKER_HEAP = "256m"
# The stack's own broker.
STACK_BROKER_ID = KAFKA_NODE_ID
# Broker-only: these belong to the stack's controller.
_CONTROLLER_ONLY = ("process.roles", "node.id", "listeners", "advertised.listeners", "log.dirs")
_REASSIGN_TOOL = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"


class ExtraBrokerFailed(CheckFailed):
    """The extra broker did not start, or a partition did not move."""


class ExtraBroker:
    """One extra broker for ``stack``, its files under ``work_dir``.

    Each one takes a fresh node id: a stopped broker stays registered (fenced) with the
    controller, so a second run on the same stack must not reuse the id of the first.
    """

    def __init__(self, stack: LocalStack, work_dir: Path) -> None:
        self.stack = stack
        self.work_dir = work_dir
        self.node_id = random.randint(100, 999_999)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._classpath = str(jar_dir(stack.config, "kafka") / "*")

    @property
    def bootstrap(self) -> str:
        return self.stack.info.kafka_bootstrap

    def _java(self, *args: str) -> list[str]:
        return [
            *java_command(self.stack.config, EXTRA_BROKER_HEAP, []),
            "-cp",
            self._classpath,
            *args,
        ]

    def _properties(self) -> str:
        conf = self.stack.config.state_dir / "kafka" / "conf" / "server.properties"
        settings = dict(
            line.split("=", 1)
            for line in conf.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        for key in _CONTROLLER_ONLY:
            settings.pop(key, None)
        # The stack's clients and brokers meet on its inter-broker listener: the same here.
        listener = settings.get("inter.broker.listener.name", "PLAINTEXT")
        settings.update(
            {
                "process.roles": "broker",
                "node.id": str(self.node_id),
                "listeners": f"{listener}://{HOST}:{self.port}",
                "advertised.listeners": f"{listener}://{HOST}:{self.port}",
                "log.dirs": str(self.work_dir / "data"),
            }
        )
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def start(self, timeout_s: float = 90.0) -> None:
        """Format its storage with the stack's cluster id, start it, wait until registered."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # A new node each time (a fresh id), so no data of an earlier one.
        shutil.rmtree(self.work_dir / "data", ignore_errors=True)
        self.port = find_free_port_block(1)
        properties = self.work_dir / "server.properties"
        properties.write_text(self._properties())
        cluster_id = (self.stack.config.state_dir / "kafka" / "cluster-id").read_text().strip()
        fmt = self._java(
            "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)
        )
        formatted = subprocess.run(fmt, capture_output=True, text=True, timeout=120, check=False)
        if formatted.returncode != 0:
            raise ExtraBrokerFailed(f"extra kafka broker: format failed: {formatted.stderr[-500:]}")
        log = (self.work_dir / "broker.log").open("wb")
        self.proc = subprocess.Popen(
            self._java("kafka.Kafka", str(properties)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        # Its own session, so a killed opsctl leaves it running: the pid says which to stop.
        (self.work_dir / "broker.pid").write_text(f"{self.proc.pid}\n")
        deadline = time.monotonic() + timeout_s
        while self.node_id not in asyncio.run(self._registered()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ExtraBrokerFailed(
                    f"extra kafka broker: node {self.node_id} not registered in {timeout_s:.0f} s "
                    f"(see {self.work_dir / 'broker.log'})",
                )
            time.sleep(0.5)

    async def _metadata(self) -> Any:
        """The cluster's metadata, asked of each broker in turn until one answers (a single
        random broker may be the frozen one, or the new one before it serves)."""
        from aiokafka import AIOKafkaClient

        client = AIOKafkaClient(bootstrap_servers=self.bootstrap)
        # Its "Unable connect to node" errors about the frozen broker are expected here.
        quiet = logging.getLogger("aiokafka")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            await client.bootstrap()
            return await client.fetch_all_metadata()
        finally:
            await client.close()
            quiet.setLevel(level)

    async def _registered(self) -> set[int]:
        try:
            return {broker.nodeId for broker in (await self._metadata()).brokers()}
        except Exception:
            return set()

    def freeze(self) -> None:
        """SIGSTOP: the controller fences it after its session times out; the partitions it
        alone holds have no leader."""
        assert self.proc is not None, "not started"
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.thaw()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def reassign(
        self, topic: str, replicas: dict[int, list[int]], timeout_s: float = 120.0
    ) -> None:
        """Move ``topic``'s partitions onto ``replicas`` (partition -> broker ids) and wait
        until Kafka reports every move complete."""
        plan = self.work_dir / f"reassign-{int(time.time() * 1000)}.json"
        plan.write_text(
            json.dumps(
                {
                    "version": 1,
                    "partitions": [
                        {"topic": topic, "partition": partition, "replicas": brokers}
                        for partition, brokers in sorted(replicas.items())
                    ],
                }
            )
        )
        base = self._java(_REASSIGN_TOOL, "--bootstrap-server", self.bootstrap)
        base += ["--reassignment-json-file", str(plan)]
        started = self._run([*base, "--execute"])
        output = started.stdout + started.stderr
        if started.returncode != 0 and "existing partition assignment" in output:
            # An earlier move of this partition is still running (an inject that timed out,
            # then its restore): cancel it, then move.
            self._run([*base, "--cancel"])
            started = self._run([*base, "--execute"])
        if started.returncode != 0:
            raise ExtraBrokerFailed(
                f"kafka reassignment: {(started.stdout + started.stderr)[-800:]}"
            )
        deadline = time.monotonic() + timeout_s
        while True:
            verified = self._run([*base, "--verify"])
            lines = [
                line
                for line in verified.stdout.splitlines()
                if line.startswith("Reassignment of partition")
            ]
            if verified.returncode == 0 and lines and all("is completed" in line for line in lines):
                return
            if time.monotonic() > deadline:
                raise ExtraBrokerFailed(
                    f"kafka reassignment not complete in {timeout_s:.0f} s: {lines}"
                )
            time.sleep(1)

    @staticmethod
    def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    async def leaders(self, topic: str) -> dict[int, int]:
        """Partition -> leader broker id (-1: none), as the cluster's metadata says now."""
        from aiokafka import TopicPartition

        metadata = await self._metadata()
        return {
            partition: metadata.leader_for_partition(TopicPartition(topic, partition))
            for partition in sorted(metadata.partitions_for_topic(topic) or ())
        }
