"""The ``region-down`` drill on the multi-region local stack (issue 13 part 6): a region
frozen under load, the unplanned failover, the survivors serving, the region woken up as a
zombie, and ``opsctl region restore``.

Timeline: Locust users spread over every region (half the DM pairs across two regions) and
the probe (each pair with a device in the region that goes down and one in another, one pair
homed in that region and one elsewhere) run; after ``WARMUP_S`` every process of the region
gets SIGSTOP (its gateways, dispatcher, relay, Redis, Kafka, its Cassandra node, i.e. its
DC, and their exporters); the failover is ``opsctl region evacuate REGION --unreachable``
(the same code, ``opsctl.region.evacuate``); the load goes on for ``duration``, the clients
of the frozen region reconnecting to another region's gateway; then the survivor's own
Cassandra node is read for what it has of the probe's messages (the RPO); then SIGCONT (the
region comes back as a zombie: its dispatcher's lease is gone, its map is old) and
``opsctl region restore`` (retried until the region's dispatchers report again).

Gates: the probe's (no acked message lost after the final sync, none duplicated, recovery in
time), the failover and the restore complete, and no (conversation, seq) naming two message
ids, read in every DC on its own as the conflict prober does (gateway/prober.py), plus no
conflict counted by the relays' probers during the drill. Figures: the RPO (acked messages
the survivor did not have at the end of the outage, neither sequenced nor held, and how old
the oldest was at the freeze), the replication lag at the freeze, the failover time
(``failover_s`` of the evacuation: from its first move until the survivors applied the map)
and the time from the freeze until a message of a conversation homed in the frozen region
reached every device again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import replace
from typing import Any

import httpx

from opsctl.drill._model import Check, Drill, DrillContext, Verdict, judge
from opsctl.drill._probe import Keepalive, Placement, Probe
from opsctl.drill._run import WARMUP_S, RunBase, credentials
from opsctl.errors import OpsctlError, UserInputError

POLL_S = 1.0
RESTORE_TIMEOUT_S = 240.0  # SIGCONT until `opsctl region restore` completed
LOAD_SLACK_S = 30.0  # Locust runs this much past warm-up and hold (the failover's length)
HTTP_TIMEOUT_S = 3.0
CQL_TIMEOUT_S = 10.0
# The probe's devices notice a frozen gateway by its silence (its sockets stay open).
KEEPALIVE = Keepalive(ping_interval_s=1.0, ping_timeout_s=3.0, open_timeout_s=5.0)
# Per probe sender (two per pair): the multi-region stack runs twice the processes of the
# one-region one on the same cores, so the probe sends at 16 messages/s, not 40.
SEND_INTERVAL_S = 0.25
LAG_METRIC = "im_relay_replication_lag_seconds"
CONFLICTS_METRIC = "im_prober_conflicts_total"


def chosen_region(stack: Any, region: str | None) -> str:
    """The region to take down: ``region``, or the stack's last; exit 2 for one it lacks."""
    names = [info.name for info in stack.info.regions]
    if region is None:
        return str(names[-1])
    if region not in names:
        raise UserInputError(
            f"--region {region}: not a region of the stack", hint=f"regions: {', '.join(names)}"
        )
    return region


def region_components(stack: Any, region: str) -> list[str]:
    """Every process of ``region``: its IM processes, Redis, Kafka, Cassandra node (its DC)
    and their exporters (a region that goes down takes all of it)."""
    return [name for name in stack.names() if name.startswith(f"{region}/")]


def freeze(ctx: DrillContext) -> None:
    """SIGSTOP every process of the region (their pids kept for the SIGCONT)."""
    frozen: dict[str, int] = {}
    for name in region_components(ctx.stack, ctx.state["region"]):
        pid = ctx.stack.pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)
            frozen[name] = pid
    ctx.state["frozen"] = frozen


def thaw(ctx: DrillContext) -> None:
    """SIGCONT whatever was frozen (the region wakes up as a zombie)."""
    for pid in dict(ctx.state.pop("frozen", {})).values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


# -- the stack's regions ---------------------------------------------------------------------


def _regions(stack: Any) -> Any:
    from opsctl.region import LocalRegions

    return LocalRegions.of(stack, stack.config.spec_stack)


def _metric(url: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The sum of ``name``'s series (matching ``labels``) at ``url``; None if it is silent."""
    try:
        text = httpx.get(url, timeout=HTTP_TIMEOUT_S).text
    except httpx.HTTPError:
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name) : len(name) + 1] not in ("{", " "):
            continue
        if labels and not all(f'{k}="{v}"' in line for k, v in labels.items()):
            continue
        total += float(line.rsplit(" ", 1)[1])
        seen = True
    return total if seen else None


def _relay_url(stack: Any, region: str) -> str:
    component = stack.component(f"{region}/relay")
    return f"http://{component.host}:{component.port}/metrics"


def _conflicts_counted(stack: Any) -> float:
    names = [info.name for info in stack.info.regions]
    return sum(_metric(_relay_url(stack, r), CONFLICTS_METRIC) or 0.0 for r in names)


def _homed_pair(regions: list[str], home: str, tag: str) -> tuple[str, str]:
    """Two user ids whose DM is first homed (epoch 0, rendezvous) in ``home``."""
    from gateway.homes import shard_of
    from gateway.shardmap import ShardMap

    fresh = ShardMap(0, tuple(regions))
    i = 0
    while True:
        a, b = f"drill-a{i}-{tag}", f"drill-b{i}-{tag}"
        low, high = sorted((a, b))
        if fresh.entry(shard_of(f"dm:{low}:{high}")).home == home:
            return a, b
        i += 1


def placement(stack: Any, down: str, suffix: str) -> Placement:
    """Pair 0 homed in the region that goes down, pair 1 in a survivor; in each pair the
    first device of each user in the region going down and the second in a survivor (so
    both senders, a0 and b1, are in different regions), each failing over to the others."""
    infos = list(stack.info.regions)
    names = [info.name for info in infos]
    survivor = next(name for name in names if name != down)
    urls = {info.name: list(info.gateway_ws_urls) for info in infos}

    def routes(first: str) -> list[str]:
        return [url for name in [first, *(n for n in names if n != first)] for url in urls[name]]

    users = [_homed_pair(names, down, f"{suffix}h0"), _homed_pair(names, survivor, f"{suffix}h1")]
    per_device = [routes(down), routes(survivor), routes(down), routes(survivor)]
    return Placement(
        users=users,
        routes=[per_device, per_device],
        keepalive=KEEPALIVE,
        send_interval_s=SEND_INTERVAL_S,
    )


# -- per-DC reads (gateway/prober.py's way: one node, LOCAL_ONE) -------------------------------


class DcReader:
    """Reads through one Cassandra node only (its DC), at LOCAL_ONE: what that DC holds."""

    def __init__(self, stack: Any, host: str, port: int, control_keyspace: str) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import WhiteListRoundRobinPolicy

        profile = ExecutionProfile(
            load_balancing_policy=WhiteListRoundRobinPolicy([host]),
            consistency_level=ConsistencyLevel.LOCAL_ONE,
            request_timeout=CQL_TIMEOUT_S,
        )
        self.keyspace = stack.info.cassandra_keyspace
        self.control = control_keyspace
        self.cluster = Cluster(
            [host],
            port=port,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            **stack.cassandra_kwargs(),
        )
        self.session = self.cluster.connect()

    def claims(self, conversation: str) -> list[tuple[int, str]]:
        """(seq, message id) as this DC stores them: message_seqs, then the message rows."""
        claims: list[tuple[int, str]] = []
        buckets: set[int] = set()
        rows = self.session.execute(
            f"SELECT message_id, seq, bucket FROM {self.keyspace}.message_seqs "
            "WHERE conversation_id = %s",
            (conversation,),
        )
        for row in rows:
            claims.append((int(row.seq), str(row.message_id)))
            if row.bucket is not None:
                buckets.add(int(row.bucket))
        for bucket in sorted(buckets):
            rows = self.session.execute(
                f"SELECT seq, message_id FROM {self.keyspace}.messages "
                "WHERE conversation_id = %s AND bucket = %s",
                (conversation, bucket),
            )
            claims.extend((int(r.seq), str(r.message_id)) for r in rows)
        return claims

    def held(self) -> set[str]:
        rows = self.session.execute(f"SELECT message_id FROM {self.control}.held_records")
        return {str(row.message_id) for row in rows}

    def close(self) -> None:
        self.cluster.shutdown()


def _control_keyspace(stack: Any, region: str) -> str:
    from gateway.config import load

    return str(load("shardmap", stack.imgw_env(region)).cassandra_control_keyspace)


def _nodes(stack: Any) -> list[tuple[str, str, int]]:
    """(DC name, host, port) of every Cassandra node: the regions' and the witness'."""
    return [
        (site.datacenter, site.cassandra_host, site.shared.cassandra)
        for site in stack.sites()
        if site.cassandra_host
    ]


def stranded(
    acked: dict[str, tuple[str, float]], present: set[str], frozen_at: float, failed_over: float
) -> dict[str, Any]:
    """The RPO figures: acked messages the survivor had neither sequenced nor held at the end
    of the outage, by when they were acked (before the freeze: not replicated when the region
    went down; between the freeze and the failover: accepted by a survivor for a conversation
    the frozen region still homed), and how long before the freeze the oldest was acked."""
    before = [at for mid, (_, at) in acked.items() if mid not in present and at <= frozen_at]
    during = [
        mid
        for mid, (_, at) in acked.items()
        if mid not in present and frozen_at < at <= failed_over
    ]
    return {
        "rpo_messages": len(before),
        "rpo_s": round(frozen_at - min(before), 2) if before else 0.0,
        "stranded_acked_before_failover": len(during),
        "acked_before_freeze": sum(1 for _, at in acked.values() if at <= frozen_at),
    }


# -- the run ---------------------------------------------------------------------------------


class RegionDownRun(RunBase):
    """One region-down run; ``verdict`` drives it."""

    def __init__(
        self, drill: Drill, stack: Any, ctx: DrillContext, duration_s: float, progress: Any
    ) -> None:
        region: str = ctx.state["region"]
        probe = Probe([], credentials(stack), ctx.suffix, placement(stack, region, ctx.suffix))
        super().__init__(drill, stack, ctx, duration_s, progress, probe=probe)
        self.region = region
        self.names = [info.name for info in stack.info.regions]
        self.survivor = next(name for name in self.names if name != self.region)
        self.figures: dict[str, Any] = {"region": self.region, "survivor": self.survivor}
        self.checks: list[Check] = []
        self.failed_over = False

    def precheck(self) -> None:
        """Exit 2 before anything changes: every region at its original (rendezvous) homes,
        none draining (an evacuation under way or interrupted). The probe's pairs are placed
        by those homes."""
        from gateway.homes import SHARDS
        from gateway.shardmap import ShardMap
        from opsctl.region import read_map

        view = read_map(_regions(self.stack))
        home = {r: n / SHARDS for r, n in ShardMap(0, tuple(self.names)).share().items()}
        away = [r for r, share in home.items() if abs(view.home_share.get(r, 0.0) - share) > 1e-9]
        if away or view.draining:
            shown = ", ".join(f"{r} {view.home_share.get(r, 0.0):.1%}" for r in self.names)
            raise UserInputError(
                f"the regions are not at their homes ({shown} of the shards, "
                f"{view.draining} draining): the drill starts from the regions at home",
                hint=" ".join(
                    f"opsctl region restore {r} --stack {self.stack.config.spec_stack};"
                    for r in away or self.names
                ),
            )
        self.figures["epoch_before"] = view.epoch

    def failover(self) -> Any:
        from opsctl.region import Request, evacuate

        return evacuate(_regions(self.stack), Request(self.region, unreachable=True))

    def restore_region(self, deadline: float) -> Any:
        """``opsctl region restore``, retried until the region's dispatchers report again."""
        from opsctl.region import Request, restore

        last = "not tried"
        while time.monotonic() < deadline:
            try:
                outcome = restore(_regions(self.stack), Request(self.region))
                if outcome.complete:
                    return outcome
                last = outcome.error or "interrupted"
            except OpsctlError as error:  # its dispatchers do not report yet: exit 2 there
                last = error.message
            except Exception as error:  # the driver's, after restore's own retries
                last = f"{type(error).__name__}: {error}"
            time.sleep(2.0)
        raise TimeoutError(f"restore {self.region} did not complete: {last}")

    def _read_survivor(self) -> set[str]:
        """Message ids the survivor's own DC has sequenced (message_seqs) or holds."""
        info = self.stack.info.region(self.survivor)
        reader = DcReader(
            self.stack,
            info.cassandra_host,
            info.cassandra_port,
            _control_keyspace(self.stack, self.survivor),
        )
        try:
            present = set(reader.held())
            for pair in self.probe.pairs:
                present |= {mid for _, mid in reader.claims(pair.conv)}
            return present
        finally:
            reader.close()

    def _conflicts(self) -> tuple[int, int, list[str]]:
        """(conflicting (conversation, seq), pairs compared, DCs not read) over the probe's
        conversations, each DC read on its own."""
        from gateway.prober import conflicting

        claims: dict[str, list[tuple[int, str]]] = {p.conv: [] for p in self.probe.pairs}
        failed: list[str] = []
        control = _control_keyspace(self.stack, self.survivor)
        for dc, host, port in _nodes(self.stack):
            try:
                reader = DcReader(self.stack, host, port, control)
            except Exception:
                failed.append(dc)
                continue
            try:
                for conv, found in claims.items():
                    found.extend(reader.claims(conv))
            except Exception:
                failed.append(dc)
            finally:
                reader.close()
        conflicts = checked = 0
        for found in claims.values():
            count, doubled = conflicting(found)
            checked += count
            conflicts += len(doubled)
        return conflicts, checked, failed

    async def outage(self) -> float | None:
        """Freeze, fail over, hold with the load on the survivors, measure the RPO, wake the
        region up and restore it; the time to recover (SIGCONT until restored, healthy and a
        message homed in the region delivered everywhere), None if not within the limit."""
        ctx = self.ctx
        lag = await asyncio.to_thread(
            _metric,
            _relay_url(self.stack, self.survivor),
            LAG_METRIC,
            {"source": self.region, "target": self.survivor},
        )
        self.figures["replication_lag_at_freeze_s"] = None if lag is None else round(lag, 2)
        frozen = ", ".join(region_components(self.stack, self.region))
        self.progress(f"freeze {self.region}: SIGSTOP {frozen}")
        frozen_at = self.mark("freeze_s")
        await asyncio.to_thread(freeze, ctx)
        self.progress(f"fail over: opsctl region evacuate {self.region} --unreachable")
        self.failed_over = True  # from the first attempt on: whatever moved goes back after
        outcome = await asyncio.to_thread(self.failover)
        failed_over = self.mark("failed_over_s")
        self.figures["failover_s"] = outcome.failover_s
        self.figures["failover_command_s"] = outcome.duration_s
        self.figures["shards_moved"] = outcome.shards_moved
        self.figures["unhealthy_at_failover"] = list(outcome.unhealthy)
        self.checks.append(
            Check(
                "failover complete",
                bool(outcome.complete and outcome.failover_s is not None),
                f"{outcome.shards_moved} shards moved, survivors on the new map "
                f"{outcome.failover_s} s after the first move"
                + (f"; {outcome.error}" if outcome.error else ""),
            )
        )
        self.progress(f"hold: {self.duration_s:.0f} s of load on {self.survivor}")
        rto: float | None = None
        while time.monotonic() - failed_over < self.duration_s or rto is None:
            if rto is None and self.probe.fresh_delivered(frozen_at, pairs=[0]):
                rto = time.monotonic() - frozen_at
            if time.monotonic() - failed_over > self.drill.max_recover_s:
                break
            await asyncio.to_thread(self.watch.poll)
            await asyncio.sleep(POLL_S)
        self.figures["freeze_to_delivery_s"] = None if rto is None else round(rto, 1)
        self.checks.append(
            Check(
                f"conversations homed in {self.region} served by {self.survivor}",
                rto is not None,
                f"a message sent after the freeze on every device {rto:.1f} s after it"
                if rto is not None
                else f"none within {self.drill.max_recover_s:.0f} s of the failover",
            )
        )
        present = await asyncio.to_thread(self._read_survivor)
        self.figures.update(stranded(self.probe.acked_times(), present, frozen_at, failed_over))
        self.progress(
            f"RPO: {self.figures['rpo_messages']} acked message(s) not on {self.survivor} "
            f"at the end of the outage (replication lag at the freeze "
            f"{self.figures['replication_lag_at_freeze_s']} s)"
        )
        self.progress(f"wake {self.region} up (SIGCONT: a zombie), then restore it")
        woken = self.mark("thaw_s")
        await asyncio.to_thread(thaw, ctx)
        deadline = woken + RESTORE_TIMEOUT_S
        try:
            restored = await asyncio.to_thread(self.restore_region, deadline)
        except TimeoutError as error:
            self.checks.append(Check("restore complete", False, str(error)))
            return None
        self.restored = True
        self.mark("restored_s")
        self.figures["restore_s"] = restored.duration_s
        self.checks.append(
            Check(
                "restore complete",
                True,
                f"{restored.shards_moved} shards back in {restored.duration_s} s; "
                f"reconciled {restored.reconciled}",
            )
        )
        while time.monotonic() < woken + self.drill.max_recover_s:
            healthy = await asyncio.to_thread(lambda: all(s.healthy for s in self.stack.status()))
            if healthy and self.probe.fresh_delivered(woken, pairs=[0]):
                return time.monotonic() - woken
            await asyncio.sleep(0.5)
        return None

    async def verdict(self, load_users: int) -> Verdict:
        from opsctl.drill._run import LOAD_COUNTERS, _load_check, _start_load

        await asyncio.to_thread(self.precheck)
        conflicts_before = await asyncio.to_thread(_conflicts_counted, self.stack)
        planned = WARMUP_S + self.duration_s + LOAD_SLACK_S
        load = _start_load(self.stack, self.ctx.report_dir, planned, load_users, self.names)
        recover_s: float | None = None
        try:
            await self.probe.start()
            await asyncio.to_thread(self.watch.baseline)
            self.progress(f"load: {load_users} Locust users across {', '.join(self.names)}")
            await self.load_running()
            await asyncio.sleep(WARMUP_S)
            recover_s = await self.outage()
            self.mark("recovered_s")
            probed = await self.settle()
        finally:
            await self.cleanup()
        conflicts, checked, failed = await asyncio.to_thread(self._conflicts)
        self.checks.append(
            Check(
                "no (conversation, seq) with two message ids",
                conflicts == 0 if not failed else (False if conflicts else None),
                f"{conflicts} conflicting of {checked} seqs of the probe's conversations, each "
                f"DC read on its own" + (f"; not read: {', '.join(failed)}" if failed else ""),
            )
        )
        counted = await asyncio.to_thread(_conflicts_counted, self.stack) - conflicts_before
        self.checks.append(
            Check("no conflict found by the relays' probers", counted == 0, f"{counted:g} new")
        )
        self.figures["conflicts"] = conflicts
        if load.thread is not None:
            self.progress("waiting for the load to end")
            await asyncio.to_thread(load.thread.join)
        await asyncio.to_thread(self.watch.poll)
        self.checks.append(_load_check(load))
        self.figures["load_delivery_regions"] = _load_regions(self.ctx.report_dir)
        accounting = replace(probed, load={k: load.counters.get(k, 0) for k in LOAD_COUNTERS})
        return judge(
            self.drill,
            accounting,
            recover_s=recover_s,
            seen=self.watch.fired(),
            state={"region": self.region},
            extra=self.checks,
            timeline=self.timeline,
            figures=self.figures,
        )

    async def cleanup(self) -> None:
        """Whatever happened: the region awake, and restored if it was failed over."""
        if self.ctx.state.get("frozen"):
            self.progress(f"waking {self.region} up after an error")
            await asyncio.to_thread(thaw, self.ctx)
        if self.failed_over and not self.restored:
            self.progress(f"restoring {self.region} after an error")
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.restore_region, time.monotonic() + RESTORE_TIMEOUT_S)
        await self.probe.close()


def _load_regions(report_dir: Any) -> dict[str, Any]:
    """The Locust run's cross- and same-region delivery latency, if it wrote its summary."""
    try:
        summary = json.loads((report_dir / "load" / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict(summary.get("delivery_regions") or {})
