"""Run one drill on the local stack: load (our Locust users) and the probe, the fault, its
restore, the recovery, the verdict and the report.

Timeline: load and probe start; after ``WARMUP_S`` the fault is injected and held for at least
``duration`` and, when the drill expects alerts, until they have all reached Alertmanager (at
most their ``for:`` plus slack); then it is restored and the drill waits until every component
is healthy and a message sent after the restore reached every device (time to recover). Then
the probe's final sync, the accounting and the gates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from opsctl.drill._alerts import AlertWatch, hold_needed, rule_durations, unknown_alerts
from opsctl.drill._model import Check, Drill, DrillContext, Verdict, judge
from opsctl.drill._probe import Credentials, Probe
from opsctl.errors import CheckFailed, OpsctlError, UserInputError
from opsctl.paths import REPO_ROOT

DEFAULT_REPORTS_DIR = REPO_ROOT / ".state" / "drill"
DEFAULT_DURATION_S = 30.0
WARMUP_S = 8.0  # the probe's first messages, and at least this much load before the fault
LOAD_START_S = 45.0  # Locust's processes and users may take this long on a busy machine
POLL_S = 2.0
SETTLE_S = 3.0  # after recovery, before the final sync
ACK_WAIT_S = 30.0
SETTLE_DELIVERY_S = 60.0  # acked messages still arriving after the recovery are not lost
LOAD_USERS = 10
# The load runs this long past the usual restore (its length is fixed when it starts; the
# probe alone covers a longer hold).
LOAD_RECOVERY_S = 10.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    report: Path


@dataclass
class _Load:
    """Locust in a thread: its summary's counters, or why it did not run."""

    thread: threading.Thread | None = None
    counters: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def open_stack(state_dir: Path | None, *, multi_region: bool = False) -> Any:
    """The running local stack with every component healthy: the one-region stack, or with
    ``multi_region`` a multi-region one (region drills); exit 2 otherwise."""
    from opsctl.local import LocalStack, resolve_state_dir
    from opsctl.local._errors import StackNotRunning

    where = resolve_state_dir(state_dir)
    up = "opsctl local up --stack staging" if multi_region else "opsctl local up"
    try:
        stack = LocalStack.recorded(where)
    except StackNotRunning as exc:
        raise UserInputError(f"no local stack in {where}", hint=f"start it with `{up}`") from exc
    if multi_region and not stack.multi_region:
        raise UserInputError(
            f"the stack in {where} has one region; this drill needs a multi-region stack",
            hint=f"`{up}` (in another --state-dir, or after `opsctl local down`)",
        )
    if stack.multi_region and not multi_region:
        raise UserInputError(
            f"the stack in {where} is multi-region ({stack.config.spec_stack}); drills run on "
            "the one-region local stack",
            hint="`opsctl local up` (stack local) in another --state-dir",
        )
    unhealthy = [s.name for s in stack.status() if not s.healthy]
    if unhealthy:
        raise UserInputError(
            f"the local stack in {where} is not up: {', '.join(unhealthy)} not healthy",
            hint=f"`{up}` starts what is down; `opsctl local status` shows why",
        )
    return stack


def _profile_text(duration_s: float, users: int, regions: list[str] | None = None) -> str:
    """The background load; with ``regions``, spread evenly over them, half the DM pairs
    across two regions."""
    names = regions or []
    shares = ", ".join(f"{region}: {1 / len(names)!r}" for region in names)
    mix = ["regions:", f"  mix: {{{shares}}}", "  cross_share: 0.5"] if regions else []
    return "\n".join(
        [
            "# Written by opsctl drill: the background load of one drill.",
            "name: drill",
            "description: Background load of an opsctl drill.",
            f"users: {users}",
            f"spawn_rate: {users}",
            f"duration_s: {duration_s:.0f}",
            "drain_s: 3",
            "behaviours:",
            "  direct: {rate_per_user_s: 0.5}",
            "  group: {rate_per_user_s: 0.2, group_size: 5}",
            "  presence: {rate_per_user_s: 0.05}",
            *mix,
            "",
        ]
    )


def _start_load(
    stack: Any, report_dir: Path, duration_s: float, users: int, regions: list[str] | None = None
) -> _Load:
    from opsctl.loadtest.profiles import parse_profile
    from opsctl.loadtest.runner import RunOptions, run_locust
    from opsctl.loadtest.targets import local_target

    profile_file = report_dir / "load-profile.yaml"
    text = _profile_text(duration_s, users, regions)
    profile_file.write_text(text, encoding="utf-8")
    profile = parse_profile(text, str(profile_file))
    target = local_target(stack.config.state_dir)
    load = _Load()

    def run() -> None:
        try:
            options = RunOptions(profile, profile_file, target, out_dir=report_dir / "load")
            result = run_locust(options)
            load.counters = {k: int(v) for k, v in result.summary.get("counters", {}).items()}
        except OpsctlError as error:
            load.error = error.message
        except Exception as error:  # the drill goes on without load figures; the report says why
            load.error = f"{type(error).__name__}: {error}"

    load.thread = threading.Thread(target=run, name="drill-load", daemon=True)
    load.thread.start()
    return load


def _healthy(stack: Any) -> bool:
    return all(s.healthy for s in stack.status())


async def wait_for_users(
    report_dir: Path, mark: Callable[[str], object], progress: Callable[[str], None]
) -> None:
    """Until the Locust users send (their timeline shows requests), at most LOAD_START_S;
    marks ``load_started_s`` then, else says so and goes on."""
    timeline = report_dir / "load" / "timeline.jsonl"
    deadline = time.monotonic() + LOAD_START_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for line in timeline.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("requests_per_s", 0) > 0:
                        mark("load_started_s")
                        return
        await asyncio.sleep(0.5)
    progress(f"the Locust users are not sending after {LOAD_START_S:.0f} s; going on")


class RunBase:
    """What every drill run keeps: its drill, stack and context, the alert watch, the probe
    and the timeline of marked events."""

    def __init__(
        self,
        drill: Drill,
        stack: Any,
        ctx: DrillContext,
        duration_s: float,
        progress: Progress,
        *,
        probe: Probe,
    ) -> None:
        self.drill, self.stack, self.ctx = drill, stack, ctx
        self.duration_s = duration_s
        self.progress = progress
        self.watch = AlertWatch(stack.info.alertmanager_url)
        self.probe = probe
        self.timeline: dict[str, float] = {}
        self.started = time.monotonic()
        self.restored = False

    def mark(self, event: str) -> float:
        now = time.monotonic()
        self.timeline[event] = round(now - self.started, 1)
        return now

    async def load_running(self) -> None:
        """Until the Locust users send, at most LOAD_START_S: a fault injected before the users
        connected would keep them from ever starting."""
        await wait_for_users(self.ctx.report_dir, self.mark, self.progress)

    async def settle(self) -> Any:
        """After the fault: let deliveries settle, stop the probe sending, and account for
        every message it sent (what was lost goes to lost.json)."""
        await asyncio.sleep(SETTLE_S)
        await self.probe.stop_sending(ACK_WAIT_S)
        self.progress("final sync and accounting")
        probed = await self.probe.finish(SETTLE_DELIVERY_S)
        self.mark("settled_s")
        if probed.lost:
            path = self.ctx.report_dir / "lost.json"
            path.write_text(json.dumps(self.probe.lost_details(), indent=2), encoding="utf-8")
            self.progress(f"{probed.lost} acked message(s) lost: {path}")
        return probed


def credentials(stack: Any) -> Credentials:
    info = stack.info
    return Credentials(info.jwt_secret_file, info.jwt_issuer, info.jwt_audience)


class _Run(RunBase):
    """One run's timeline; ``verdict`` drives it."""

    def __init__(
        self, drill: Drill, stack: Any, ctx: DrillContext, duration_s: float, progress: Progress
    ) -> None:
        probe = Probe(list(stack.info.gateway_ws_urls), credentials(stack), ctx.suffix)
        super().__init__(drill, stack, ctx, duration_s, progress, probe=probe)

    async def hold_limits(self) -> tuple[float, float]:
        """How long the fault is usually held and at most: ``duration``, or longer for the
        expected alerts."""
        durations = await asyncio.to_thread(rule_durations, self.stack.info.prometheus_url)
        missing = unknown_alerts(self.drill.expected_alerts, durations)
        if missing:
            raise CheckFailed(
                f"drill {self.drill.name} expects {', '.join(missing)}, which the stack's "
                "Prometheus has no rule for"
            )
        expected = self.drill.expected_alerts
        onset = self.drill.onset_s
        usual = onset + hold_needed(expected, durations, typical=True)
        longest = onset + hold_needed(expected, durations)
        if self.drill.alerts_after_restore:  # the hold does not wait for them
            return self.duration_s, max(self.duration_s, longest)
        return max(self.duration_s, usual), max(self.duration_s, longest)

    async def fault(self, hold_max: float) -> float | None:
        """Inject, hold, restore; the time to recover (None: not within the drill's limit)."""
        drill, ctx = self.drill, self.ctx
        if drill.inject is None or drill.restore is None:
            raise UserInputError(f"drill '{drill.name}' has no fault on the local stack")
        self.progress(f"inject: {drill.fault}")
        self.mark("inject_s")
        await asyncio.to_thread(drill.inject, ctx)
        # The hold counts from the fault in place: an inject can take a while (moving a
        # partition onto another broker), and the alerts' clocks start only now.
        injected = self.mark("injected_s")
        wanted = ", ".join(a.describe(ctx.state) for a in drill.expected_alerts)
        waits = bool(wanted) and not drill.alerts_after_restore
        until = f", until {wanted} fired (at most {hold_max:.0f} s)" if waits else ""
        self.progress(f"hold: at least {self.duration_s:.0f} s{until}")
        while True:
            held = time.monotonic() - injected
            if drill.holding is not None:
                await asyncio.to_thread(drill.holding, ctx)
            await asyncio.to_thread(self.watch.poll)
            fired = self.watch.decided(drill.expected_alerts, ctx.state)
            if held >= self.duration_s and (fired or held >= hold_max or not waits):
                break
            await asyncio.sleep(POLL_S)
        self.progress("restore")
        restore_at = self.mark("restore_s")
        await asyncio.to_thread(drill.restore, ctx)
        self.restored = True
        recover_s = await self.recovery(restore_at)
        self.mark("recovered_s")
        self.progress(
            f"recovered in {recover_s:.1f} s"
            if recover_s is not None
            else f"not recovered within {drill.max_recover_s:.0f} s"
        )
        if drill.alerts_after_restore and wanted:
            self.progress(f"waiting for {wanted} (at most {hold_max:.0f} s)")
            while not self.watch.decided(drill.expected_alerts, ctx.state):
                if time.monotonic() - restore_at >= hold_max:
                    break
                await asyncio.sleep(POLL_S)
                await asyncio.to_thread(self.watch.poll)
        return recover_s

    async def recovery(self, since: float) -> float | None:
        """Seconds from ``since`` until every component is healthy and a probe message sent
        after ``since`` reached every member device; None if not within the drill's limit."""
        deadline = since + self.drill.max_recover_s
        while time.monotonic() < deadline:
            if self.probe.fresh_delivered(since) and await asyncio.to_thread(_healthy, self.stack):
                return time.monotonic() - since
            await asyncio.to_thread(self.watch.poll)
            await asyncio.sleep(0.5)
        return None

    async def verdict(self, load_users: int) -> Verdict:
        hold_usual, hold_max = await self.hold_limits()
        planned = WARMUP_S + hold_usual + LOAD_RECOVERY_S
        load = _start_load(self.stack, self.ctx.report_dir, planned, load_users)
        try:
            await self.probe.start()
            await asyncio.to_thread(self.watch.baseline)
            self.progress(f"load: {load_users} Locust users and the probe")
            await self.load_running()
            await asyncio.sleep(WARMUP_S)
            recover_s = await self.fault(hold_max)
            probed = await self.settle()
        finally:
            if not self.restored and self.drill.restore is not None:
                self.progress("restoring after an error")
                await asyncio.to_thread(self.drill.restore, self.ctx)
            await self.probe.close()
        extra = (
            await asyncio.to_thread(self.drill.extra_checks, self.ctx)
            if self.drill.extra_checks
            else []
        )
        if load.thread is not None:
            self.progress("waiting for the load to end")
            await asyncio.to_thread(load.thread.join)
        await asyncio.to_thread(self.watch.poll)
        extra.append(_load_check(load))
        accounting = replace(probed, load={k: load.counters.get(k, 0) for k in LOAD_COUNTERS})
        return judge(
            self.drill,
            accounting,
            recover_s=recover_s,
            seen=self.watch.fired(),
            state=self.ctx.state,
            extra=extra,
            timeline=self.timeline,
        )


def _load_check(load: _Load) -> Check:
    if load.error is not None:
        return Check("load ran", None, load.error)
    sent = load.counters.get("sent_acked", 0)
    return Check("load ran", sent > 0 or None, f"{sent} Locust sends acked")


LOAD_COUNTERS = (
    "sent_acked",
    "sent_outcome_unknown",
    "delivered_live",
    "delivered_sync",
    "lost",
    "duplicated",
    "out_of_order",
    "disconnects",
)


def run_drill(
    drill: Drill,
    stack: Any,
    *,
    duration_s: float = DEFAULT_DURATION_S,
    report_dir: Path | None = None,
    load_users: int = LOAD_USERS,
    progress: Progress | None = None,
    region: str | None = None,
) -> Outcome:
    """Run ``drill`` on ``stack`` (from :func:`open_stack`); the verdict and the report's path.
    ``region``: the region a region drill takes down (default: the stack's last)."""
    if duration_s <= 0:
        raise UserInputError(f"--duration {duration_s:g}: must be more than 0 seconds")
    if not drill.available:
        raise UserInputError(
            f"drill '{drill.name}' cannot run on the local stack: {drill.unavailable}"
        )
    if region is not None and not drill.multi_region:
        raise UserInputError(f"--region: drill '{drill.name}' runs on the one-region stack")
    state: dict[str, Any] = {}
    if drill.multi_region:
        from opsctl.drill._region import chosen_region

        state["region"] = chosen_region(stack, region)
    suffix = uuid.uuid4().hex[:8]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    out = report_dir or DEFAULT_REPORTS_DIR / f"{stamp}-{drill.name}-{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    ctx = DrillContext(stack=stack, report_dir=out, suffix=suffix, state=state)
    shown = progress or (lambda _m: None)
    if drill.multi_region:
        from opsctl.drill._region import RegionDownRun

        verdict = asyncio.run(
            RegionDownRun(drill, stack, ctx, duration_s, shown).verdict(load_users)
        )
    else:
        verdict = asyncio.run(_Run(drill, stack, ctx, duration_s, shown).verdict(load_users))
    report = out / "drill.json"
    document = {**verdict.as_dict(), "duration_s": duration_s, "report_dir": str(out)}
    report.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return Outcome(verdict, report)
