"""The two operations, step by step (docs/multi-region.md 7.1-7.3), with progress, an outcome
that says what is done and what is left, and interruption.

Each step is planned from the shard map as read at that moment, so an interrupted or crashed
run is resumed by running the same command again: shards already moved are not in the plan,
shards left draining are moved by the next planned batch, gateways already drained are skipped,
held records are reconciled by the next run's final pass.

Interruption: Ctrl-C, and SIGTERM (turned into the same), stop the operation between or inside
steps; every step is atomic on the map (one conditional batch), so the map is consistent
whatever was hit. The outcome then has ``complete: false`` and ``left`` (the CLI exits 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, TypeVar

from gateway.shardmap import DRAINING, MAP_LEASE_S, REFRESH_S, ShardMap
from opsctl.errors import CheckFailed, OpsctlError, UserInputError
from opsctl.region._plan import (
    batches,
    evacuation_plan,
    home_share,
    restore_plan,
)
from opsctl.region._regions import (
    GatewayDrain,
    GatewayReport,
    NullProgress,
    Progress,
    Regions,
)
from opsctl.region._shards import Shards, transient

T = TypeVar("T")

RETRIES = 4  # attempts of one step on Cassandra timeouts
GATEWAY_MARGIN_S = 1.0  # past the gateways' map refresh period
EVACUATE = "evacuate"
RESTORE = "restore"
PLANNED = "planned"
UNPLANNED = "unplanned"


@dataclass(frozen=True)
class Request:
    region: str
    unreachable: bool = False
    batch: int = 512
    timeout_s: float = 30.0  # per wait for dispatchers to apply a map change
    budget_per_s: float = 500.0  # the spec's reconnect_budget.reconnects_per_second


@dataclass
class Outcome:
    """What one run did and what is left; ``as_dict`` is the ``--output json`` document."""

    operation: str
    region: str
    mode: str
    epoch_before: int
    shards_planned: int
    complete: bool = False
    interrupted: bool = False
    error: str | None = None  # why it stopped, when a step failed
    epoch_after: int | None = None
    shards_moved: int = 0
    batches: int = 0
    reconciled: dict[str, int] = field(
        default_factory=lambda: {"held": 0, "already_sequenced": 0, "sequenced": 0}
    )
    gateways: list[GatewayDrain] = field(default_factory=list)
    budget_per_s: float = 0.0
    unhealthy: list[str] = field(default_factory=list)
    home_share: dict[str, float] = field(default_factory=dict)
    left: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    # Unplanned: from the first move until every survivor's dispatchers applied the last one
    # and the gateways' refresh period passed (what clients send from then on is sequenced at
    # once: the RTO after the decision).
    failover_s: float | None = None

    def add_reconciled(self, done: dict[str, int]) -> None:
        for key, value in done.items():
            self.reconciled[key] = self.reconciled.get(key, 0) + value

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM behaves as Ctrl-C while the operation runs (a stopped pod, ``kill``)."""

    def forward(signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # A background job ignores SIGINT: forwarding would lose the SIGTERM.
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGINT)

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Operation:
    def __init__(self, regions: Regions, request: Request, progress: Progress) -> None:
        self.regions = regions
        self.request = request
        self.progress = progress
        self.region = request.region
        self.shards = Shards(regions.backends(prefer_not=request.region))
        self.runner = asyncio.Runner()
        self.started = time.monotonic()

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    def step(self, make: Callable[[], Awaitable[T]], what: str) -> T:
        """Run one step; a Cassandra timeout (an LWT's outcome unknown) re-plans it from the
        map and tries again, a few times, since every step is idempotent."""
        for attempt in range(1, RETRIES + 1):
            try:
                result: T = self.run(make())
                return result
            except Exception as exc:
                if not transient(exc) or attempt == RETRIES:
                    raise
                self.progress.note(
                    f"{what}: {type(exc).__name__}, retrying from the map ({attempt}/{RETRIES - 1})"
                )
                time.sleep(attempt)
        raise AssertionError("unreachable")

    def read(self) -> ShardMap:
        current: ShardMap = self.step(self.shards.read, "reading the shard map")
        return current

    # -- the operations ----------------------------------------------------------------------

    def evacuate(self) -> Outcome:
        current = self.read()
        plan = evacuation_plan(current, self.region)  # exit 2 here: nothing changed yet
        mode = UNPLANNED if self.request.unreachable else PLANNED
        if mode == PLANNED and plan:
            self._require_live_dispatchers()
        outcome = self._outcome(EVACUATE, mode, current, len(plan))
        with self._interruptible(outcome):
            if mode == UNPLANNED:
                self._unplanned(plan, outcome)
            else:
                self._planned(plan, outcome)
                self._final_reconcile(outcome)
                self._drain_gateways(outcome)
            outcome.complete = True
        return self._finish(outcome)

    def restore(self) -> Outcome:
        current = self.read()
        plan = restore_plan(current, self.region)  # exit 2 here: nothing changed yet
        if plan:
            self._require_live_dispatchers(
                hint=f"{self.region} must be back first: its dispatchers running and reporting "
                "(`opsctl local status`); its shards stay with the other regions meanwhile"
            )
        outcome = self._outcome(RESTORE, PLANNED, current, len(plan))
        with self._interruptible(outcome):
            self._start_gateways(outcome)
            self.progress.step("reconciling held records (7.3) before any shard moves back")
            outcome.add_reconciled(self.step(self.shards.reconcile, "reconciling"))
            self._planned(plan, outcome)
            self._final_reconcile(outcome)
            outcome.complete = True
        return self._finish(outcome)

    # -- steps -------------------------------------------------------------------------------

    def _outcome(self, operation: str, mode: str, current: ShardMap, planned: int) -> Outcome:
        self.progress.step(
            f"{operation} {self.region} ({mode}): {planned} shards to move, map epoch "
            f"{current.epoch}"
        )
        return Outcome(
            operation=operation,
            region=self.region,
            mode=mode,
            epoch_before=current.epoch,
            shards_planned=planned,
            budget_per_s=self.request.budget_per_s,
        )

    def _require_live_dispatchers(self, hint: str | None = None) -> None:
        """A planned move needs the old home to confirm its drain (and a restore the region
        to take its shards back); when the region's dispatchers stopped reporting, say so
        before changing anything."""
        reports = self.step(
            partial(self.shards.control.reported, self.region), "reading the reports"
        )
        now_ms = time.time() * 1000
        live = [n for n, (_, seen) in reports.items() if now_ms - seen < MAP_LEASE_S * 1000]
        down = self.regions.dispatchers_down(self.region)
        if down is not None:
            raise UserInputError(
                f"the dispatchers of '{self.region}' are not running ({down}): the region "
                "cannot confirm a drain, so a planned move cannot be done",
                hint=hint
                or f"for an unplanned failover: opsctl region evacuate {self.region} "
                "--unreachable (docs/multi-region.md 7.2)",
            )
        if not live:
            raise UserInputError(
                f"no dispatcher of '{self.region}' reported within {MAP_LEASE_S:.0f} s: the "
                "region looks unreachable, so a planned move cannot be done",
                hint=hint
                or f"for an unplanned failover: opsctl region evacuate {self.region} "
                "--unreachable (docs/multi-region.md 7.2)",
            )

    def _planned(self, plan: dict[int, str], outcome: Outcome) -> None:
        todo = batches(plan, self.request.batch)
        total = len(plan)
        everyone = self.regions.names
        self.progress.shards(0, total)
        for number, batch in enumerate(todo, 1):
            self.progress.step(
                f"batch {number}/{len(todo)}: drain {len(batch)} shards, wait for their "
                "dispatchers, move"
            )
            moved = self.step(
                partial(self.shards.planned, batch, self.request.timeout_s), f"batch {number}"
            )
            outcome.shards_moved += len(batch)
            outcome.batches += 1
            outcome.epoch_after = moved.epoch
            self.progress.shards(outcome.shards_moved, total)
            # Every region held the batch's records while it drained: once all applied the
            # move, settle those holds (the new home sequences what nobody did).
            behind = self.step(
                partial(self.shards.wait_applied, everyone, moved.epoch, self.request.timeout_s),
                "waiting for the dispatchers",
            )
            if behind:
                outcome.warnings.append(
                    f"dispatchers of {', '.join(behind)} did not apply epoch {moved.epoch} "
                    f"within {self.request.timeout_s:.0f} s; the final reconciliation covers it"
                )
            outcome.add_reconciled(
                self.step(partial(self.shards.reconcile, set(batch)), "reconciling")
            )
            self.progress.note(
                f"batch {number}/{len(todo)} moved: {outcome.shards_moved}/{total} shards, "
                f"epoch {moved.epoch}"
            )

    def _final_reconcile(self, outcome: Outcome) -> None:
        self.progress.step("final reconciliation of held records")
        outcome.add_reconciled(self.step(self.shards.reconcile, "reconciling"))

    def _unplanned(self, plan: dict[int, str], outcome: Outcome) -> None:
        self.progress.step(f"checking {self.region}'s health (7.2 step 1)")
        outcome.unhealthy = self.regions.unhealthy(self.region)
        if not outcome.unhealthy:
            outcome.warnings.append(
                f"every component of {self.region} answers its health check; moving its "
                "shards unplanned anyway, as asked (--unreachable)"
            )
        todo = batches(plan, self.request.batch)
        total = len(plan)
        self.progress.shards(0, total)
        epoch = outcome.epoch_before
        moving = time.monotonic()
        last_move = moving
        for number, batch in enumerate(todo, 1):
            moved = self.step(partial(self.shards.unplanned, batch), f"batch {number}")
            last_move = time.monotonic()
            epoch = moved.epoch
            outcome.shards_moved += len(batch)
            outcome.batches += 1
            outcome.epoch_after = epoch
            self.progress.shards(outcome.shards_moved, total)
            self.progress.note(f"batch {number}/{len(todo)} moved (unplanned), epoch {epoch}")
        survivors = [r for r in self.regions.names if r != self.region]
        self.progress.step(f"waiting for {', '.join(survivors)} to apply epoch {epoch}")
        behind = self.step(
            partial(self.shards.wait_applied, survivors, epoch, self.request.timeout_s),
            "waiting for the survivors",
        )
        # Gateways stamp records with the map epoch they last read (every REFRESH_S) and report
        # it nowhere: a record they accept with the old stamp is held (5.5) until `restore`
        # reconciles it. Wait one refresh, so what clients send from now on is sequenced.
        wait = REFRESH_S + GATEWAY_MARGIN_S - (time.monotonic() - last_move)
        if wait > 0:
            self.progress.note(f"waiting {wait:.1f} s for the gateways' next map refresh")
            time.sleep(wait)
        if behind:
            outcome.warnings.append(f"{', '.join(behind)} did not apply epoch {epoch} in time")
        else:
            outcome.failover_s = round(time.monotonic() - moving, 2)

    def _drain_gateways(self, outcome: Outcome) -> None:
        """7.1 step 4: the platform's drain, paced by the reconnect budget."""
        report = self.regions.drain_gateways(self.region, self.request.budget_per_s, self.progress)
        self._add(report, outcome)

    def _start_gateways(self, outcome: Outcome) -> None:
        self._add(self.regions.start_gateways(self.region, self.progress), outcome)

    @staticmethod
    def _add(report: GatewayReport, outcome: Outcome) -> None:
        outcome.gateways.extend(report.steps)
        outcome.warnings.extend(report.warnings)

    # -- the end -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _interruptible(self, outcome: Outcome) -> Iterator[None]:
        """Interruption and a failed step both end the run with an outcome that says what is
        left (the map is consistent either way: every change is one conditional batch)."""
        try:
            with _sigterm_interrupts():
                yield
        except (KeyboardInterrupt, asyncio.CancelledError):
            # CancelledError: Ctrl-C landed while asyncio.Runner was starting a step (its
            # handler cancelled the step, then reset its count): the same interruption.
            outcome.interrupted = True
            self.progress.note("interrupted: the map is consistent; re-run to continue")
        except OpsctlError as error:
            outcome.error = error.message
            self.progress.note(f"failed: {error.message}")
        except Exception as exc:  # the driver's and Kafka's errors, after the retries
            outcome.error = f"{type(exc).__name__}: {exc}"
            self.progress.note(f"failed: {outcome.error}")

    def _finish(self, outcome: Outcome) -> Outcome:
        final = self.read()
        outcome.epoch_after = final.epoch
        outcome.home_share = {r: round(v, 4) for r, v in home_share(final).items()}
        homed_here = len(final.homed_in(self.region))
        draining = len([s for s, e in final.rows.items() if e.state == DRAINING])
        if outcome.operation == EVACUATE:
            outcome.left["shards_homed_in_region"] = homed_here
            if outcome.mode == PLANNED:
                outcome.left["gateways_serving"] = self.regions.serving(self.region)
        else:
            outcome.left["shards_away"] = len(restore_plan(final, self.region))
        outcome.left["shards_draining"] = draining
        outcome.left["held_records"] = self.step(self.shards.held, "counting held records")
        outcome.duration_s = round(time.monotonic() - self.started, 2)
        return outcome

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.runner.run(self.shards.aclose())
        self.runner.close()
        self.shards.close()


def evacuate(regions: Regions, request: Request, progress: Progress | None = None) -> Outcome:
    """Move every shard homed in ``request.region`` to another region and drain its gateways
    (planned, 7.1), or move them at once without a drain (``unreachable``, 7.2)."""
    return _with(regions, request, progress, EVACUATE)


def restore(regions: Regions, request: Request, progress: Progress | None = None) -> Outcome:
    """Start the region's gateways, reconcile held records (7.3), then move the region's
    rendezvous shards back with planned moves."""
    return _with(regions, request, progress, RESTORE)


def _with(regions: Regions, request: Request, progress: Progress | None, operation: str) -> Outcome:
    shown = progress or NullProgress()
    op = _Operation(regions, request, shown)
    try:
        op.shards.connect()
        return op.evacuate() if operation == EVACUATE else op.restore()
    except Exception as exc:
        if not transient(exc):
            raise
        raise CheckFailed(
            f"the shard map did not answer: {type(exc).__name__}: {exc}",
            hint=f"re-run `opsctl region {operation} {request.region}` to continue",
        ) from exc
    finally:
        op.close()
        shown.close()
