"""The regions of a running local stack (``opsctl local up --stack staging``): where the shard
map and each region's Kafka are, and the region's gateways as processes.

**What "drain" means locally.** A region's gateways are asked to close their sessions the way
a Kubernetes pod is: SIGTERM. The gateway then stops admitting, tells each session to
reconnect elsewhere (a ``reconnect`` frame and close 1012), paced over its drain window
(``IMGW_DRAIN_WINDOW_S``, the local stack's ``drain_window_s``), and exits when the last session
is gone; clients reconnect to a gateway of another region. opsctl drains one gateway at a
time and waits between them so that, averaged, the reconnects stay within the spec's
``reconnect_budget.reconnects_per_second`` (``_plan.drain_pause_s``). ``restore`` starts the
region's gateways again. A region declared unreachable is left alone (its gateways are gone).
The region's dispatcher process must run for a planned move (``dispatchers_down``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from opsctl.errors import UserInputError
from opsctl.local import LocalStack
from opsctl.region._plan import drain_pause_s, gateway_rate
from opsctl.region._regions import GatewayDrain, GatewayReport, Progress
from opsctl.region._shards import Backends

METRICS_TIMEOUT_S = 2.0
SESSIONS_METRIC = "im_gateway_connections_active"


@dataclass(frozen=True)
class Gateway:
    name: str  # the local component, <region>/gw-N
    http_url: str


@dataclass(frozen=True)
class LocalRegions:
    """The regions of one recorded local stack."""

    stack: LocalStack

    @classmethod
    def of(cls, stack: LocalStack, spec_stack: str) -> LocalRegions:
        """Exit 2 unless the local stack runs ``spec_stack`` with more than one region."""
        running = stack.config.spec_stack
        if running != spec_stack:
            raise UserInputError(
                f"the local stack in {stack.config.state_dir} runs stack '{running}', "
                f"not '{spec_stack}'",
                hint=f"pass --stack {running}, or start it: opsctl local up --stack {spec_stack}",
            )
        if not stack.multi_region:
            raise UserInputError(
                f"stack '{running}' has one region: there is nowhere to move its conversations",
                hint="run a multi-region stack: opsctl local up --stack staging",
            )
        return cls(stack)

    @property
    def names(self) -> list[str]:
        return [info.name for info in self.stack.info.regions]

    def drain_window_s(self) -> float:
        return float(self.stack.config.drain_window_s)

    def backends(self, prefer_not: str | None = None) -> Backends:
        """The shard map through every region's Cassandra node, ``prefer_not``'s last (an
        unreachable region's node is then only tried after the survivors')."""
        from gateway.config import load
        from gateway.store import CassandraAuth

        infos = sorted(self.stack.info.regions, key=lambda r: r.name == prefer_not)
        config = load("shardmap", self.stack.imgw_env(infos[0].name))
        return Backends(
            cassandra_hosts=[(r.cassandra_host, r.cassandra_port) for r in infos],
            control_keyspace=config.cassandra_control_keyspace,
            keyspace=config.cassandra_keyspace,
            bucket_s=config.cassandra_bucket_s,
            kafka={r.name: r.kafka_bootstrap for r in infos},
            topic=config.kafka_topic,
            cassandra_auth=CassandraAuth.of(config),
        )

    def gateways(self, region: str) -> list[Gateway]:
        info = self.stack.info.region(region)
        return [
            Gateway(f"{region}/{gid}", url)
            for gid, url in zip(info.gateway_ids, info.gateway_http_urls, strict=True)
        ]

    def running(self, gateway: Gateway) -> bool:
        return self.stack.pid(gateway.name) is not None

    def sessions(self, gateway: Gateway) -> int | None:
        """Open sessions on the gateway (its /metrics), None when it does not answer."""
        try:
            text = httpx.get(f"{gateway.http_url}/metrics", timeout=METRICS_TIMEOUT_S).text
        except httpx.HTTPError:
            return None
        for line in text.splitlines():
            if line.startswith(SESSIONS_METRIC + " "):
                return int(float(line.split()[1]))
        return None

    def drain(self, gateway: Gateway) -> None:
        """SIGTERM and wait until it exited (it drains its sessions first)."""
        self.stack.stop(gateway.name)

    def start(self, gateway: Gateway) -> None:
        self.stack.start(gateway.name)

    def dispatchers_down(self, region: str) -> str | None:
        name = f"{region}/dispatcher"
        return None if self.stack.pid(name) is not None else f"{name} is not running"

    def serving(self, region: str) -> list[str]:
        return [g.name for g in self.gateways(region) if self.running(g)]

    def close(self) -> None:
        pass

    def drain_gateways(self, region: str, budget_per_s: float, progress: Progress) -> GatewayReport:
        """7.1 step 4, locally: one gateway at a time, paced by the reconnect budget."""
        report = GatewayReport()
        gateways = self.gateways(region)
        window = self.drain_window_s()
        first: float | None = None
        for index, gateway in enumerate(gateways):
            if not self.running(gateway):
                report.steps.append(GatewayDrain(gateway.name, 0, 0.0, None, "already stopped"))
                continue
            sessions = self.sessions(gateway)
            count = sessions or 0
            rate = gateway_rate(count, window)
            if rate > budget_per_s:
                report.warnings.append(
                    f"{gateway.name}: {count} sessions over its {window:.0f} s drain window is "
                    f"{rate:.0f} reconnects/s, above the budget of {budget_per_s:.0f}/s (the "
                    "gateway paces by its window, IMGW_DRAIN_WINDOW_S)"
                )
            progress.step(
                f"draining {gateway.name}: {count} sessions over its {window:.0f} s window"
            )
            began = time.monotonic()
            first = began if first is None else first
            self.drain(gateway)
            took = time.monotonic() - began
            per_s = round(count / took, 1) if took > 0 else None
            report.steps.append(
                GatewayDrain(
                    gateway.name, sessions, round(took, 2), per_s, at_s=round(began - first, 2)
                )
            )
            if index + 1 < len(gateways):
                pause = drain_pause_s(count, budget_per_s, took)
                if pause > 0:
                    progress.note(f"pausing {pause:.1f} s for the reconnect budget")
                    time.sleep(pause)
        return report

    def start_gateways(self, region: str, progress: Progress) -> GatewayReport:
        report = GatewayReport()
        for gateway in self.gateways(region):
            if self.running(gateway):
                report.steps.append(GatewayDrain(gateway.name, None, 0.0, None, "already running"))
                continue
            progress.step(f"starting {gateway.name}")
            began = time.monotonic()
            self.start(gateway)
            took = round(time.monotonic() - began, 2)
            report.steps.append(GatewayDrain(gateway.name, None, took, None, "started"))
        return report

    def unhealthy(self, region: str) -> list[str]:
        """The region's components that fail their health check (all of them: gone)."""
        prefix = f"{region}/"
        return [
            row.name
            for row in self.stack.status()
            if row.name.startswith(prefix) and not row.healthy
        ]
